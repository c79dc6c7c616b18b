"""Stage `dpo_train@<variant>`: single-token DPO with LoRA on one Cliff-DPO variant's training pairs;
an MLflow run in experiment `cliff-dpo` and a new version of the registered model `cliff-dpo-<model>`.

    python pipeline/dpo_train.py uncertain_sampled_off

Writes models/adapters/<variant>/ (PEFT adapter, DVC-cached), runs/dpo_train/<variant>.json (the MLflow
run id and model version: a `cache: false` out), metrics/dpo_train/<variant>.json and
plots/dpo_train/<variant>.csv (loss per step). The tracking store is MLFLOW_TRACKING_URI or
<repo>/mlflow.db (cliffdata/tracking.py).
"""
import json
import logging
import shutil
import sys
import time
from pathlib import Path

import torch

from cliffdata import duck, schema, tracking
from cliffdata.config import load_params, section_dict
from cliffdata.dpo import registry
from cliffdata.dpo.train import add_lora, evaluate_pairs, padding_id, save_adapter, train_dpo


def main(variant: str) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    params = load_params()
    cfg = params.dpo_train
    if variant not in cfg.variants:
        raise SystemExit(f"dpo_train: variant {variant!r} is not in dpo_train.variants {list(cfg.variants)}")
    torch.set_num_threads(cfg.threads)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    pairs_path = Path(f"data/dpo_pairs/{variant}.parquet")
    rows = schema.read("dpo_pairs", pairs_path).to_pylist()
    train = [r for r in rows if r["split"] == "train"]
    heldout = [r for r in rows if r["split"] == "heldout"]
    tokenizer = AutoTokenizer.from_pretrained("models/base")
    pad_id = padding_id(tokenizer)
    base = AutoModelForCausalLM.from_pretrained("models/base", dtype=torch.float32)
    model = add_lora(base, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.target_modules, cfg.seed)

    tags = {"variant": variant, "pairs_md5": schema.file_digest(pairs_path, "md5"),
            "num_train_pairs": str(len(train)), "stage": f"dpo_train@{variant}"}
    logged = section_dict("params.yaml", "dpo_train", "dpo_pairs", "model")
    started = time.perf_counter()
    with tracking.start_run("cliff-dpo", f"dpo_train-{variant}", params=logged, tags=tags) as run:
        before = evaluate_pairs(model, heldout, cfg, tokenizer.eos_token_id, pad_id)
        history = train_dpo(model, train, cfg, tokenizer.eos_token_id, pad_id)
        after = evaluate_pairs(model, heldout, cfg, tokenizer.eos_token_id, pad_id)
        tracking.log_history(run.info.run_id, history)
        summary = {"variant": variant, "num_train_pairs": len(train), "num_heldout_pairs": len(heldout),
                   "num_steps": len(history), "train_loss_first": history[0]["loss"] if history else None,
                   "train_loss_last": history[-1]["loss"] if history else None,
                   **{f"heldout_{k}_before": v for k, v in before.items()},
                   **{f"heldout_{k}": v for k, v in after.items()}}
        tracking.log_metrics({k: v for k, v in summary.items() if isinstance(v, float)})

        out = Path(f"models/adapters/{variant}")
        tmp = out.with_name(out.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        save_adapter(model, tmp)
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
        name = registry.registered_model_name(params.model.source)
        version = model_uri = None
        if train:            # an adapter that saw no pair is the base model: it is not a model version
            info = registry.log_adapter(out, "models/base", name, pad_id, params.token_stats.top_k)
            registry.tag_version(name, info.registered_model_version, {"variant": variant, "num_train_pairs": str(len(train))})
            version, model_uri = info.registered_model_version, info.model_uri
        run_record = {"run_id": run.info.run_id, "experiment_id": run.info.experiment_id,
                      "registered_model": name, "version": version, "model_uri": model_uri,
                      "tracking_uri": tracking.tracking_uri()}

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
                      "wall_seconds": round(time.perf_counter() - started, 1)}))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python pipeline/dpo_train.py <variant>")
    main(sys.argv[1])
