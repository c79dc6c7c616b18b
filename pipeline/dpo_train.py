"""Stage `dpo_train`: single-token DPO with LoRA, one adapter per Cliff-DPO variant; per variant an MLflow
run in experiment `cliff-dpo` and a new version of the registered model `cliff-dpo-<model>`.

    python pipeline/dpo_train.py                  # every variant of dpo_train.variants (the DVC stage)
    python pipeline/dpo_train.py uncertain all    # just these

Writes per variant models/adapters/<variant>/ (PEFT adapter, DVC-cached), runs/dpo_train/<variant>.json
(the MLflow run id and model version: `cache: false`), metrics/dpo_train/<variant>.json and
plots/dpo_train/<variant>.csv (loss per step). The tracking store is MLFLOW_TRACKING_URI or
<repo>/mlflow.db (cliffdata/tracking.py).

One process trains every variant, so the imports are paid once, not once per variant:
`dpo_train.workers` processes (each `dpo_train.threads` torch threads) train the variants side by side,
largest first; variants whose pairs are the same rows (e.g. `all` and `uncertain_sampled_off` when no
cliff is deterministic) are trained once and the adapter copied: training is deterministic, so it is the
adapter either would get. MLflow is written by this process alone, variant by variant in the configured
order, after the training: the registry versions come out in that order.
"""
from __future__ import annotations

import json
import logging
import shutil
import sys
from pathlib import Path

from cliffdata import schema, tracking
from cliffdata.analysis import duck
from cliffdata.config.load import load_params, section_dict
from cliffdata.dpo.train import read_pairs, train_all

log = logging.getLogger("dpo_train")


def main(variants: list[str] | None = None) -> None:
    tracking.preflight("dpo_train")          # a tracking server that is down: seconds, not after the training
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    params = load_params()
    cfg = params.dpo_train
    variants = list(variants or cfg.variants)
    unknown = [v for v in variants if v not in cfg.variants]
    if unknown:
        raise SystemExit(f"dpo_train: {unknown} not in dpo_train.variants {list(cfg.variants)}")

    pairs, source = read_pairs(variants)
    shared = {v: s for v, s in source.items() if s != v}
    if shared:
        log.info("same pairs, trained once: %s", ", ".join(f"{v} = {s}" for v, s in shared.items()))
    results = train_all(pairs, source, cfg, cfg.workers)

    import mlflow

    from cliffdata.dpo import registry

    logged = section_dict("params.yaml", "dpo_train", "dpo_pairs", "model")
    name = registry.registered_model_name(params.model.source)
    for variant in variants:
        train, heldout = pairs[variant]
        result = results[source[variant]]
        history, before, after = result["history"], result["before"], result["after"]
        out = Path(f"models/adapters/{variant}")
        shutil.rmtree(out, ignore_errors=True)
        Path(f"models/adapters/{variant}.tmp").rename(out)
        pairs_path = Path(f"data/dpo_pairs/{variant}.parquet")
        tags = {"variant": variant, "pairs_md5": schema.file_digest(pairs_path, "md5"),
                "num_train_pairs": str(len(train)), "stage": "dpo_train"}
        if variant in shared:
            tags["same_pairs_as"] = shared[variant]
        with tracking.start_run("cliff-dpo", f"dpo_train-{variant}", params=logged, tags=tags) as run:
            tracking.log_history(run.info.run_id, history)
            summary = {"variant": variant, "num_train_pairs": len(train), "num_heldout_pairs": len(heldout),
                       "num_steps": len(history), "train_loss_first": history[0]["loss"] if history else None,
                       "train_loss_last": history[-1]["loss"] if history else None,
                       **{f"heldout_{k}_before": v for k, v in before.items()},
                       **{f"heldout_{k}": v for k, v in after.items()}}
            tracking.log_metrics({k: v for k, v in summary.items() if isinstance(v, float)})
            tracking.log_metrics({"train_seconds": result["seconds"]})
            version = model_uri = None
            if train:            # an adapter that saw no pair is the base model: it is not a model version
                info = registry.log_adapter(out, "models/base", name, result["pad_id"], params.token_stats.top_k)
                registry.tag_version(name, info.registered_model_version,
                                     {"variant": variant, "num_train_pairs": str(len(train))})
                version, model_uri = info.registered_model_version, info.model_uri
            # what a store without this run restores it from (registry.training_run): its tags, the git
            # commit and DVC experiment among them, and the one metric no DVC-tracked file holds
            logged_tags = {k: v for k, v in mlflow.MlflowClient().get_run(run.info.run_id).data.tags.items()
                           if not k.startswith("mlflow.")}
            run_record = {"run_id": run.info.run_id, "experiment_id": run.info.experiment_id,
                          "registered_model": name, "version": version, "model_uri": model_uri,
                          "tracking_uri": tracking.portable_uri(tracking.tracking_uri()),
                          "tags": dict(sorted(logged_tags.items())),
                          "metrics": {"train_seconds": round(result["seconds"], 3)}}

        rounded = {k: round(v, duck.NUM_DIGITS) if isinstance(v, float) else v for k, v in summary.items()}
        for path, text in ((f"runs/dpo_train/{variant}.json", json.dumps(run_record, indent=2) + "\n"),
                           (f"metrics/dpo_train/{variant}.json", json.dumps(rounded, indent=2, sort_keys=True) + "\n"),
                           (f"plots/dpo_train/{variant}.csv", duck.format_csv(
                               ["step", "loss", "reward_accuracy", "margin"],
                               [[h["step"], round(h["loss"], 6), round(h["reward_accuracy"], 6), round(h["margin"], 6)]
                                for h in history]))):
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(text)
        print(json.dumps({**rounded, "version": run_record["version"],
                          "train_seconds": round(result["seconds"], 1)}))


if __name__ == "__main__":
    main(sys.argv[1:] or None)
