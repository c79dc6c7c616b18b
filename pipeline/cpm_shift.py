"""Stage `cpm_shift`: the source model's cliff sets read by other same-tokenizer models (protocol §5 RQ3).

    python pipeline/cpm_shift.py

The source is the pipeline's model (models/base) with its cliffs and candidates. Each entry of
`cpm_shift.eval_models` is `base`, `adapter:<variant>` (models/adapters/<variant>, a Cliff-DPO adapter on
the same base), `champion` (the adapter behind `models:/cliff-dpo-<model>@champion`, set by
`cliffdata promote`; `cpm_shift.fallback` until there is one), or an HF model id / local path (its
tokenizer must equal the source's). Writes data/cpm_shift/cpm_shift.parquet, metrics/cpm_shift.{json,md}
and plots/cpm_shift.csv (mean CPM per direction, category and side, source model beside eval
model), after the SQL checks pass.
"""
import json
import logging
from pathlib import Path

from cliffdata import schema
from cliffdata.analysis import duck
from cliffdata.config.load import load_params

log = logging.getLogger("cpm_shift")


def resolve(spec: str, fallback: str) -> tuple[str, str]:
    """(requested, resolved) eval model spec; `champion` becomes `adapter:<variant>` of the promotion
    recorded in runs/champion.json (git-tracked: the same in every clone, whatever its MLflow store)."""
    if spec != "champion":
        return spec, spec
    from cliffdata.dpo import registry

    variant = registry.champion(Path("."))
    if variant is None:
        log.warning("no champion promoted yet (%s): using %s (run `cliffdata promote`)", registry.CHAMPION_RECORD,
                    fallback)
        return spec, fallback
    return spec, f"adapter:{variant}"


def load_eval_model(spec: str, source_tokenizer):
    """The eval model of a resolved spec, in fp32, after the tokenizer check."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from cliffdata.experiments.cpm_shift import check_same_tokenizer

    base_dir = "models/base"
    if spec == "base" or spec.startswith("adapter:"):
        model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
        if spec.startswith("adapter:"):
            from peft import PeftModel
            folder = Path("models/adapters") / spec.split(":", 1)[1]
            if not folder.exists():
                raise SystemExit(f"cpm_shift: {folder} does not exist (is the variant in dpo_train.variants?)")
            model = PeftModel.from_pretrained(model, folder)
        return model.eval()
    check_same_tokenizer(source_tokenizer, AutoTokenizer.from_pretrained(spec), "models/base", spec)
    return AutoModelForCausalLM.from_pretrained(spec, dtype=torch.float32).eval()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    params = load_params()
    cfg = params.cpm_shift
    # torch and transformers: every eval model is loaded (cpm_shift.eval_models is never empty)
    import torch
    from transformers import AutoTokenizer

    from cliffdata.dpo.train import padding_id
    from cliffdata.experiments.cpm_shift import cpm_shift_rows, source_inputs

    torch.set_num_threads(params.dpo_train.threads)
    tokenizer = AutoTokenizer.from_pretrained("models/base")
    pad_id = padding_id(tokenizer)
    d = source_inputs(Path("."), params.cliffs.use)
    rows, resolved = [], {}
    for spec in cfg.eval_models:
        requested, spec = resolve(spec, cfg.fallback)
        resolved[requested] = spec
        model = load_eval_model(spec, tokenizer)
        rows += cpm_shift_rows("base", spec, model, pad_id, d["traces"], d["cliffs"], d["candidates"], d["stats"],
                               cfg.top_k)
        del model
    schema.write("cpm_shift", rows, schema.PATHS["cpm_shift"])
    con = duck.connect(Path("."), ["cpm_shift", "cliffs", "candidates"])
    duck.assert_checks(con)
    table = duck.run_sql_file(con, "cpm_shift", {})
    files = duck.table_files(table, "category")
    records = [{c: round(v, duck.NUM_DIGITS) if isinstance(v, float) else v for c, v in r.items()}
               for r in table.to_pylist()]
    by_direction: dict = {}
    for r in records:
        by_direction.setdefault(r.pop("direction"), {})[r.pop("category")] = r
    Path("metrics").mkdir(exist_ok=True)
    Path("plots").mkdir(exist_ok=True)
    Path("metrics/cpm_shift.json").write_text(json.dumps({"eval_models": resolved, "directions": by_direction},
                                                         indent=2, sort_keys=True) + "\n")
    Path("metrics/cpm_shift.md").write_text(files["md"])
    # the plot: one bar per direction, category and side (source model, eval model), long format
    bars = [[f"{r['category']}: {side} ({r['direction']})", round(r[f"cpm_{side}_mean"], duck.NUM_DIGITS)]
            for r in table.to_pylist() for side in ("source", "eval")]
    Path("plots/cpm_shift.csv").write_text(duck.format_csv(["bar", "cpm_mean"], bars))
    print(json.dumps({"eval_models": resolved, "num_rows": len(rows)}))


if __name__ == "__main__":
    main()
