"""Stage `cliff_count`: cliffs per trace and per 1k tokens by category, for the base model and every
Cliff-DPO adapter trained on at least one pair: one trace per problem on the first
`cliff_count.num_problems` dpo_eval problems, full rollouts without early termination (protocol §6).

    python pipeline/cliff_count.py

The rollouts of every model run in one scheduler (an engine call packs several models' prefixes) and
checkpoint by wave under .cache/cliff_count/<fingerprint>/rollouts/; a killed run resumes there.
Writes data/cliff_count/cliff_count.parquet and metrics/cliff_count.json.
"""
import contextlib
import dataclasses
import json
import logging
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from cliffdata import grading, schema
from cliffdata.analysis import duck
from cliffdata.backends import open_backend
from cliffdata.backends.hf import load_adapters
from cliffdata.checkpoint import UnitCheckpoint
from cliffdata.config.load import load_params
from cliffdata.dpo.cliff_count import count_cliffs, summarize
from cliffdata.dpo.evaluate import BASE, eval_problems, same_adapters, trained_variants
from cliffdata.search.rollouts import fingerprint


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    params = load_params()
    cfg = params.cliff_count
    grading.configure(params.grading)
    torch.set_num_threads(params.dpo_train.threads)
    training = schema.read("problems", schema.PATHS["problems"]).to_pylist()
    problems, _ = eval_problems(params.dpo_eval.sources, training, params.prompts)
    problems = problems[:cfg.num_problems]
    variants = trained_variants(params.dpo_train.variants)
    adapters = {v: f"models/adapters/{v}" for v in variants}
    rollouts = dataclasses.replace(params.rollouts, num_rollouts=cfg.num_rollouts, seed=cfg.seed, early_stop_zeros=0)
    # the searches decide by the cliff test: a resumed run must have searched with the same one
    key = fingerprint(dataclasses.asdict(cfg), dataclasses.asdict(rollouts), dataclasses.asdict(params.cliffs.test),
                      dataclasses.asdict(params.engine.resolved()),
                      dataclasses.asdict(params.sample), problems, schema.tree_digest("models/base"),
                      schema.file_digest(grading.__file__), dataclasses.asdict(params.grading),
                      {v: schema.file_digest(f"{p}/adapter_model.safetensors") for v, p in adapters.items()})
    tokenizer = AutoTokenizer.from_pretrained("models/base")
    model = AutoModelForCausalLM.from_pretrained("models/base", dtype=torch.float32).eval()
    if adapters:
        model = load_adapters(model, adapters).eval()
    models = {BASE: None} | {v: v for v in sorted(adapters)}
    digests = {v: schema.tree_digest(adapters[v]) for v in sorted(adapters)}
    checkpoint = UnitCheckpoint(f".cache/cliff_count/{key}/rollouts")
    with open_backend(params.engine, "models/base", seed=cfg.seed, adapters=adapters or None) as backend:
        rows = count_cliffs(models, backend, model, tokenizer, problems, params.prompts, params.sample.sampling,
                            params.sample.seed, rollouts, rollouts.sampling, params.cliffs, params.token_stats.top_k,
                            checkpoint, digests=digests)
    same_as = same_adapters(digests)
    schema.write("cliff_count", rows, schema.PATHS["cliff_count"])
    summary = summarize(rows)
    out = {"num_problems": len(problems), "num_rollouts": cfg.num_rollouts, "mode": rollouts.mode,
           "lora": params.engine.resolved().lora if params.engine.backend == "vllm" else None,
           "models": {m: {k: round(v, duck.NUM_DIGITS) if isinstance(v, float) else v for k, v in cell.items()}
                      for m, cell in summary.items()},
           "skipped_no_training_pairs": sorted(set(params.dpo_train.variants) - set(adapters)),
           "same_adapter_as": {m: src for m, src in same_as.items() if src != m},
           "num_grading_timeouts": grading.grader().num_timeouts}       # answers of traces and rollouts
    Path("metrics").mkdir(exist_ok=True)
    Path("metrics/cliff_count.json").write_text(json.dumps(out, indent=2, sort_keys=True) + "\n")
    checkpoint.remove()                          # files set aside as corrupt stay, and so does their folder
    with contextlib.suppress(OSError):
        Path(f".cache/cliff_count/{key}").rmdir()
    print(json.dumps({m: {"cliffs_per_trace": c["cliffs_per_trace"], "num_correct": c["num_correct"]}
                      for m, c in out["models"].items()}))


if __name__ == "__main__":
    main()
