"""Stage `dpo_eval`: greedy accuracy of the base model and every Cliff-DPO adapter on problems disjoint
from training, with a paired bootstrap 95% interval of each adapter's difference to the base model.

    python pipeline/dpo_eval.py

One engine serves the base and every adapter (vLLM: one LoRARequest per adapter with a unique id; HF:
PEFT adapters). Results are logged to an MLflow run `dpo_eval` and, as `dpo_eval.metric`, to each
adapter's training run (what `cliffdata promote` ranks). Writes data/dpo_eval/dpo_eval.parquet and
metrics/dpo_eval.json.
"""
import dataclasses
import json
import logging
from pathlib import Path

import mlflow
from transformers import AutoTokenizer

from cliffdata import grading, schema, tracking
from cliffdata.analysis import duck
from cliffdata.backends import open_backend
from cliffdata.checkpoint import stage_checkpoint
from cliffdata.config.load import load_params, section_dict
from cliffdata.dpo import registry
from cliffdata.dpo.evaluate import BASE, accuracy_summary, eval_problems, evaluate_models, trained_variants
from cliffdata.dpo.pairs import CONTROL_VARIANT
from cliffdata.schema import tree_digest


def main() -> None:
    tracking.preflight("dpo_eval")           # a tracking server that is down: seconds, not after the evaluation
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    params = load_params()
    cfg = params.dpo_eval
    if cfg is None:
        raise SystemExit("dpo_eval: params.yaml has no dpo_eval section")
    grading.configure(params.grading)
    training = schema.read("problems", schema.PATHS["problems"]).to_pylist()
    problems, num_overlap = eval_problems(cfg.sources, training, params.prompts)
    runs = trained_variants(params.dpo_train.variants)
    models = [BASE, *runs]
    tokenizer = AutoTokenizer.from_pretrained("models/base")
    adapters = {v: f"models/adapters/{v}" for v in runs}
    # one unit per (model, problem); a killed run resumes here (removed after the outputs are written)
    checkpoint = stage_checkpoint("dpo_eval", dataclasses.asdict(params.engine.resolved()), tree_digest("models/base"),
                                  schema.file_digest(grading.__file__), root=Path("."))
    digests = {v: tree_digest(path) for v, path in adapters.items()}
    with open_backend(params.engine, "models/base", seed=cfg.seed, adapters=adapters or None) as backend:
        rows = evaluate_models(backend, tokenizer, problems, params.prompts, models, cfg.max_new_tokens,
                               checkpoint=checkpoint, adapter_digests=digests)
    print(checkpoint.report("dpo_eval"), flush=True)
    schema.write("dpo_eval", rows, schema.PATHS["dpo_eval"])
    # every adapter against the base and, when it was trained, against the random-position control
    summary = accuracy_summary(rows, BASE, cfg.bootstrap_resamples, cfg.seed, control=CONTROL_VARIANT)

    # MLflow mirrors the DVC-tracked results: each adapter's training run gets its eval metrics (a run
    # this store lacks, as in a colleague's clone, is restored from the DVC-tracked files first)
    name = registry.registered_model_name(params.model.source)
    mlflow.set_tracking_uri(tracking.tracking_uri())
    client = mlflow.MlflowClient()
    # every recorded variant in dpo_train's order (a variant without pairs too): a store that lacks them
    # gets their versions in the author's order
    recorded = registry.training_runs(params.dpo_train.variants, Path("."), name, params.token_stats.top_k, client)
    run_ids = {v: recorded.get(v) or registry.training_run(v, Path("."), name, params.token_stats.top_k, client)
               for v in runs}
    with tracking.start_run("cliff-dpo", "dpo_eval", params=section_dict("params.yaml", "dpo_eval", "engine")) as run:
        tracking.log_metrics({f"{m}/{k}": v for m, cell in summary.items() for k, v in cell.items()})
        for v, run_id in run_ids.items():
            for metric, key in registry.metric_keys(cfg.metric).items():
                client.log_metric(run_id, metric, summary[v][key])
            client.set_tag(run_id, "dpo_eval_run_id", run.info.run_id)
    skipped = sorted(set(params.dpo_train.variants) - set(runs))
    out = {"num_problems": len(problems), "num_overlap_dropped": num_overlap, "backend": params.engine.backend,
           "lora": params.engine.resolved().lora if params.engine.backend == "vllm" else None,
           "models": {m: {k: round(v, duck.NUM_DIGITS) if isinstance(v, float) else v for k, v in cell.items()}
                      for m, cell in summary.items()},
           "skipped_no_training_pairs": skipped,
           "num_grading_timeouts": grading.grader().num_timeouts}         # responses graded ungradable (None) by time
    Path("metrics").mkdir(exist_ok=True)
    Path("metrics/dpo_eval.json").write_text(json.dumps(out, indent=2, sort_keys=True) + "\n")
    checkpoint.remove()
    print(json.dumps(out["models"]))


if __name__ == "__main__":
    main()
