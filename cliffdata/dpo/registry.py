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

import json
import logging
import re
from pathlib import Path

import mlflow.pyfunc
import pandas as pd

from cliffdata.config import ModelConfig

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


def run_metric(client, run_id: str, metric: str) -> float | None:
    return client.get_run(run_id).data.metrics.get(metric)


def promote(registered_name: str, metric: str, greater_is_better: bool = True, client=None) -> tuple[object, float]:
    """Set the alias `champion` on the version whose run has the best `metric`; returns (version, value).

    Versions whose run lacks the metric are skipped; ties go to the newest version.
    """
    client = client or mlflow.MlflowClient()
    versions = client.search_model_versions(f"name = '{registered_name}'")
    if not versions:
        raise ValueError(f"no versions of registered model {registered_name!r}")
    scored = [(v, run_metric(client, v.run_id, metric)) for v in versions]
    scored = [(v, m) for v, m in scored if m is not None]
    if not scored:
        raise ValueError(f"no version of {registered_name!r} has a run with metric {metric!r} "
                         f"(run `dvc repro dpo_eval` first; versions: {sorted(int(v.version) for v in versions)})")
    sign = 1 if greater_is_better else -1
    best, value = max(scored, key=lambda vm: (sign * vm[1], int(vm[0].version)))
    client.set_registered_model_alias(registered_name, CHAMPION, best.version)
    log.info("%s@%s -> version %s (%s = %s)", registered_name, CHAMPION, best.version, metric, value)
    return best, value



def tag_version(registered_name: str, version: str | int, tags: dict[str, str], client=None) -> None:
    """Tags on one registry version (e.g. the variant it was trained on)."""
    client = client or mlflow.MlflowClient()
    for key, value in tags.items():
        client.set_model_version_tag(registered_name, str(version), key, value)


def trained_variants(variants, root: str | Path = ".") -> dict[str, dict]:
    """Run records (runs/dpo_train/<variant>.json) of the variants whose adapter saw at least one pair;
    an adapter without pairs equals the base model and is not evaluated again."""
    out = {}
    for v in variants:
        record = json.loads((Path(root) / f"runs/dpo_train/{v}.json").read_text())
        if json.loads((Path(root) / f"metrics/dpo_train/{v}.json").read_text())["num_train_pairs"] > 0:
            out[v] = record
    return out


def champion_variant(registered_name: str, client=None) -> str | None:
    """The `variant` tag of the version behind `<registered_name>@champion`, or None when there is no
    such registered model or alias."""
    from mlflow.exceptions import MlflowException

    client = client or mlflow.MlflowClient()
    try:
        version = client.get_model_version_by_alias(registered_name, CHAMPION)
    except MlflowException:
        return None
    return version.tags.get("variant")
