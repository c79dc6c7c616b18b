"""Stage `study_cpm_shift`: the study's models read each other's cliffs (protocol §5 RQ3, both directions).

    python pipeline/study_cpm_shift.py

For every ordered pair (source, eval) of the study's models (the pipeline's own and `study.models`,
cliffdata/study.py) whose tokenizers agree, the eval model reads each of the *source's* selected cliffs
(`cliffs.use`) at the source's exact prefix ids, and the CPM over the source's cliff set is recomputed
(cliffdata/experiments/cpm_shift.py). A pair whose tokenizers differ is refused, the failed check named in
metrics/study_cpm_shift.json (`refused`); the others still run. Writes
data/study_cpm_shift/cpm_shift.parquet (source_model / eval_model: the study's names) after the SQL checks
pass; `study_tables` turns it into ΔCPM by direction.
"""
import json
import logging
from pathlib import Path

from cliffdata import schema
from cliffdata.analysis import duck
from cliffdata.config.load import load_params
from cliffdata.study import members

log = logging.getLogger("study_cpm_shift")


def read_each_other(study: dict, params) -> tuple[list[dict], list[tuple[str, str]], dict[str, str]]:
    """The rows of every (source, eval) pair whose tokenizers agree, the pairs, and the refused pairs."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from cliffdata.dpo.train import padding_id
    from cliffdata.experiments.cpm_shift import cpm_shift_rows, source_inputs, study_pairs

    torch.set_num_threads(params.dpo_train.threads)
    tokenizers = {name: AutoTokenizer.from_pretrained(m.layout.path("models/base")) for name, m in study.items()}
    pairs, refused = study_pairs(list(study), tokenizers)
    for pair, why in refused.items():
        log.warning("%s refused: %s", pair, why)
    sources: dict[str, dict] = {}
    rows = []
    # one load per eval model: it reads every source it pairs with
    for eval_name in study:
        its_sources = [s for s, e in pairs if e == eval_name]
        if not its_sources:
            continue
        model = AutoModelForCausalLM.from_pretrained(study[eval_name].layout.path("models/base"), dtype=torch.float32).eval()
        pad_id = padding_id(tokenizers[eval_name])
        for source in its_sources:
            if source not in sources:
                sources[source] = source_inputs(study[source].root, params.cliffs.use)
            d = sources[source]
            rows += cpm_shift_rows(source, eval_name, model, pad_id, d["traces"], d["cliffs"], d["candidates"],
                                   d["stats"], params.cpm_shift.top_k)
        del model
    return rows, pairs, refused


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    params = load_params()
    study = {m.name: m for m in members(params)}
    # one model (no study.models) has no pair to read: no model or tokenizer is loaded
    rows, pairs, refused = read_each_other(study, params) if len(study) > 1 else ([], [], {})
    schema.write("study_cpm_shift", rows, schema.PATHS["study_cpm_shift"])
    duck.assert_checks(duck.connect(Path("."), ["study_cpm_shift"]))
    record = {"models": list(study), "pairs": [f"{s} -> {e}" for s, e in pairs], "refused": refused,
              "num_rows": len(rows)}
    Path("metrics").mkdir(exist_ok=True)
    Path("metrics/study_cpm_shift.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    print(json.dumps({k: v for k, v in record.items() if k != "refused"} | {"num_refused": len(refused)}))


if __name__ == "__main__":
    main()
