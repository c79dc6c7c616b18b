"""Cliff-DPO adapters in MLflow: a pyfunc model that loads base + adapter, registry versions, promotion.

    info = log_adapter("models/adapters/uncertain", base_dir="models/base", registered_name="cliff-dpo-smollm2")
    version = promote("cliff-dpo-smollm2", metric="eval_accuracy")          # alias `champion`
    model = mlflow.pyfunc.load_model("models:/cliff-dpo-smollm2@champion")
    model.predict(pd.DataFrame({"prompt_ids": [[1, 2, 3]], "token_ids": [[5, 6]]}))

Only the adapter (~MB) is stored in MLflow; the base model is referenced by path in the model config
(`base_model`), never copied (a copy per version would be the whole base, 0.5 GB for SmolLM2).
`mlflow.transformers` is not used: with a base that is not on a hub it saves the wrapped state dict and
re-initialises q/k/v/o on load (measured, ../shared/notes). Promotion is a decision, so it is a CLI
step (`cliffdata promote`), not a pipeline stage.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path

import mlflow.pyfunc
import pandas as pd

from cliffdata.config.model import BASE_MODEL, ModelConfig

log = logging.getLogger(__name__)

CHAMPION = "champion"


def registered_model_name(model_source: str) -> str:
    """`cliff-dpo-<model>`: the model's name (`ModelConfig.name`), lowercased, [a-z0-9.-] only."""
    name = ModelConfig(source=model_source).name
    return "cliff-dpo-" + re.sub(r"[^a-z0-9.]+", "-", name.lower()).strip("-")


class CliffAdapterModel(mlflow.pyfunc.PythonModel):
    """Base + LoRA adapter; `predict` gives next-token log-probabilities after each `prompt_ids` row.

    Input: a DataFrame with `prompt_ids` (list of ints) and optionally `token_ids` (list of ints).
    Output: a DataFrame with `top_ids` / `top_logprobs` (the top `top_k` of the model config: params `token_stats.top_k`) and, when asked, `token_logprobs`.
    """

    def load_context(self, context) -> None:
        import torch
        from peft import PeftModel
        from transformers import AutoModelForCausalLM

        base_dir = context.model_config["base_model"]
        if not Path(base_dir).exists():
            raise FileNotFoundError(f"base model folder {base_dir} (from the model config) does not exist; "
                                    f"`dvc pull models/base` or pass model_config={{'base_model': ...}} to load_model")
        base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=getattr(torch, context.model_config["dtype"]))
        self.model = PeftModel.from_pretrained(base, context.artifacts["adapter"]).eval()
        self.pad_id = int(context.model_config["pad_id"])
        self.top_k = int(context.model_config["top_k"])

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        import torch

        from cliffdata.dpo.train import next_token_logprobs

        prompts = [list(map(int, p)) for p in model_input["prompt_ids"]]
        with torch.no_grad():
            logp = next_token_logprobs(self.model, prompts, self.pad_id)                   # (B, V)
        top_lp, top_ids = logp.topk(self.top_k, dim=-1)
        out = pd.DataFrame({"top_ids": top_ids.tolist(), "top_logprobs": top_lp.tolist()})
        if "token_ids" in model_input:
            out["token_logprobs"] = [logp[i, list(map(int, toks))].tolist()
                                     for i, toks in enumerate(model_input["token_ids"])]
        return out


def adapter_signature():
    """The pyfunc's input and output schema (CliffAdapterModel.predict), checked by MLflow at predict time."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Array, ColSpec, DataType, Schema

    ids, logprobs = Array(DataType.long), Array(DataType.double)
    return ModelSignature(
        inputs=Schema([ColSpec(ids, "prompt_ids"), ColSpec(ids, "token_ids", required=False)]),
        outputs=Schema([ColSpec(ids, "top_ids"), ColSpec(logprobs, "top_logprobs"),
                        ColSpec(logprobs, "token_logprobs", required=False)]))


def log_adapter(adapter_dir: str | Path, base_dir: str | Path, registered_name: str, pad_id: int, top_k: int,
                dtype: str = "float32"):
    """Log the adapter folder as a pyfunc model of the active run (with its signature) and register a
    new version. `top_k`: how many next tokens `predict` returns (params `token_stats.top_k`).

    Returns the ModelInfo; `info.registered_model_version` is the new version.
    """
    return mlflow.pyfunc.log_model(
        name="cliff_adapter", python_model=CliffAdapterModel(),
        artifacts={"adapter": str(Path(adapter_dir).resolve())},
        model_config={"base_model": str(Path(base_dir).resolve()), "pad_id": int(pad_id), "top_k": int(top_k),
                      "dtype": dtype},
        # explicit requirements: MLflow's inference would import the world and take a minute
        pip_requirements=["torch", "transformers", "peft", "pandas"],
        signature=adapter_signature(), registered_model_name=registered_name)


CHAMPION_RECORD = "runs/champion.json"      # git-tracked: the promoted variant, readable without any store


def metric_keys(metric: str) -> dict[str, str]:
    """dpo_eval's metric names (params `dpo_eval.metric`, logged to each adapter's run) -> the keys of a
    model's cell in metrics/dpo_eval.json, the DVC-tracked source of those values."""
    return {metric: "accuracy", f"{metric}_diff": "diff_to_base", f"{metric}_diff_ci_low": "diff_ci_low",
            f"{metric}_diff_ci_high": "diff_ci_high"}


def eval_scores(root: str | Path, metric: str, eval_metric: str) -> dict[str, float]:
    """Each evaluated adapter's `metric` from metrics/dpo_eval.json (the base model excluded)."""
    path = Path(root) / "metrics/dpo_eval.json"
    if not path.exists():
        raise ValueError(f"no {path}: run `dvc repro dpo_eval` (or `dvc pull`) first")
    keys = metric_keys(eval_metric)
    cells = json.loads(path.read_text())["models"]
    key = keys.get(metric, metric)
    scores = {v: cell[key] for v, cell in cells.items() if v != BASE_MODEL and cell.get(key) is not None}
    if not scores:
        known = sorted({*keys, *(k for cell in cells.values() for k in cell)})
        raise ValueError(f"no adapter in {path} has {metric!r} (known: {known})")
    return scores


RUN_RECORDS = "runs/dpo_train"


def recorded_variants(root: str | Path, variants) -> list[str]:
    """The variants of `variants` (dpo_train.variants, the order dpo_train trains and registers them in)
    that have a run record under runs/dpo_train/."""
    return [v for v in variants if (Path(root) / RUN_RECORDS / f"{v}.json").is_file()]


def training_runs(variants, root: str | Path, registered_name: str, top_k: int, client=None) -> dict[str, str]:
    """`training_run` of every recorded variant, in dpo_train's order (a variant without pairs too), so that
    a store that lacks them gets its versions in the author's order whichever variant is asked for first."""
    return {v: training_run(v, root, registered_name, top_k, client) for v in recorded_variants(root, variants)}


def history_rows(path: Path) -> list[dict]:
    """The per-step training curve dpo_train writes (plots/dpo_train/<variant>.csv) as log_history rows."""
    import csv

    with path.open(newline="") as f:
        return [{"step": int(r["step"]), **{k: float(v) for k, v in r.items() if k != "step"}} for r in csv.DictReader(f)]


def training_run(variant: str, root: str | Path, registered_name: str, top_k: int, client=None) -> str:
    """The run id, in the current MLflow store, of a variant's training: the one its run record
    (runs/dpo_train/<variant>.json) names when this store has it; else a run restored from what DVC
    tracks, made once per store (tag `cliffdata.restored_from` = the recorded id): the params from
    params.yaml, the tags and train_seconds from the run record, the final metrics from
    metrics/dpo_train/<variant>.json, the per-step curve from plots/dpo_train/<variant>.csv, and the
    adapter (models/adapters/<variant>) registered again as a version when the original was (a variant
    trained on no pair has no version)."""
    from mlflow.exceptions import MlflowException

    from cliffdata import tracking
    from cliffdata.config.load import section_dict

    root = Path(root)
    client = client or mlflow.MlflowClient()
    record = json.loads((root / RUN_RECORDS / f"{variant}.json").read_text())
    try:
        return client.get_run(record["run_id"]).info.run_id
    except MlflowException:
        pass
    experiment = client.get_experiment_by_name("cliff-dpo")
    if experiment is not None:
        found = client.search_runs([experiment.experiment_id],
                                   f"tags.`cliffdata.restored_from` = '{record['run_id']}'", max_results=1)
        if found:
            return found[0].info.run_id
    summary = json.loads((root / f"metrics/dpo_train/{variant}.json").read_text())
    tags = {"variant": variant, "stage": "dpo_train", "num_train_pairs": str(summary["num_train_pairs"]),
            **record.get("tags", {}), "cliffdata.restored_from": record["run_id"]}
    with tracking.start_run("cliff-dpo", f"dpo_train-{variant}", root=root, tags=tags,
                            params=section_dict(root / "params.yaml", "dpo_train", "dpo_pairs", "model")) as run:
        curve = root / f"plots/dpo_train/{variant}.csv"
        if curve.is_file():
            tracking.log_history(run.info.run_id, history_rows(curve))
        tracking.log_metrics({k: v for k, v in summary.items() if isinstance(v, float)})
        tracking.log_metrics(record.get("metrics", {}))
        if record.get("version") is not None:
            from transformers import AutoTokenizer

            from cliffdata.dpo.train import padding_id

            pad_id = padding_id(AutoTokenizer.from_pretrained(root / "models/base"))
            info = log_adapter(root / f"models/adapters/{variant}", root / "models/base", registered_name, pad_id, top_k)
            tag_version(registered_name, info.registered_model_version,
                        {"variant": variant, "num_train_pairs": str(summary["num_train_pairs"]),
                         "restored_from": record["run_id"]}, client)
    log.info("restored the %s training run %s as %s in %s", variant, record["run_id"], run.info.run_id,
             mlflow.get_tracking_uri())
    return run.info.run_id


def promote(root: str | Path, registered_name: str, metric: str, eval_metric: str, top_k: int, variants,
            greater_is_better: bool = True, client=None) -> dict:
    """Point the alias `champion` at the adapter with the best `metric` in metrics/dpo_eval.json (ties: the
    first variant by name) and record the decision in runs/champion.json (git-tracked, the source of truth
    for `cpm_shift`); the training runs of `variants` (dpo_train.variants) are restored first, in that
    order, in a store that lacks them. Returns the record."""
    root = Path(root)
    client = client or mlflow.MlflowClient()
    scores = eval_scores(root, metric, eval_metric)
    sign = 1 if greater_is_better else -1
    variant = min(scores, key=lambda v: (-sign * scores[v], v))
    run_ids = training_runs(variants, root, registered_name, top_k, client)
    run_id = run_ids.get(variant) or training_run(variant, root, registered_name, top_k, client)
    versions = client.search_model_versions(f"name = '{registered_name}' and run_id = '{run_id}'")
    if not versions:
        raise ValueError(f"{variant}: its run {run_id} has no version of {registered_name!r} (it trained on no pair)")
    version = max(versions, key=lambda v: int(v.version))
    client.set_registered_model_alias(registered_name, CHAMPION, version.version)
    record = {"registered_model": registered_name, "variant": variant, "metric": metric, "value": scores[variant],
              "greater_is_better": greater_is_better,
              "dpo_eval_md5": hashlib.md5((root / "metrics/dpo_eval.json").read_bytes()).hexdigest()}
    path = root / CHAMPION_RECORD
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")
    log.info("%s@%s -> version %s (%s, %s = %s)", registered_name, CHAMPION, version.version, variant, metric,
             scores[variant])
    return {**record, "version": version.version, "run_id": run_id}


def champion(root: str | Path = ".") -> str | None:
    """The promoted variant of runs/champion.json (None: nothing promoted yet)."""
    path = Path(root) / CHAMPION_RECORD
    return json.loads(path.read_text()).get("variant") if path.exists() else None


def tag_version(registered_name: str, version: str | int, tags: dict[str, str], client=None) -> None:
    """Tags on one registry version (e.g. the variant it was trained on)."""
    client = client or mlflow.MlflowClient()
    for key, value in tags.items():
        client.set_model_version_tag(registered_name, str(version), key, value)
