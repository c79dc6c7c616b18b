"""The cliff risk of every token of a trace, before any rollout: the features the risk model reads, computed
from the trace's token statistics exactly as `risk_labels` computes them (`labels.token_features`), scored
by the logistic model the risk stage fit on every problem (runs/risk.json `model`).

    model = load_model(Path("."))                                  # LinearRisk; runs/risk.json
    scored = trace_risk(stats, num_tokens, model, sampling, delta_min)   # one row per token, `risk` last
    stats = text_token_stats(model_dir, prompt_ids, response_ids, params.token_stats, sampling)   # new text

A token the sampler identity clears (max_drop below the test's δ_min at the rollouts' N) has risk 0: the
model was fit on the feasible positions only and is not asked about the others. A feasible token whose
sampler probability is unknown has no risk (null).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cliffdata import schema
from cliffdata.config.generate import SamplingConfig
from cliffdata.risk.labels import STAT_COLUMNS, token_features
from cliffdata.risk.model import LinearRisk, feature_matrix

RECORD = "runs/risk.json"


def load_model(root: Path) -> LinearRisk:
    """The risk stage's fitted logistic model (runs/risk.json under `root`); a ValueError saying what to run
    where there is none."""
    path = Path(root) / RECORD
    if not path.is_file():
        raise ValueError(f"{path}: no risk model here; `dvc repro risk` fits one (docs/risk.md)")
    model = json.loads(path.read_text()).get("model")
    if not model:
        raise ValueError(f"{path}: the risk stage registered no model (the labels hold one class only, or none)")
    return LinearRisk.from_dict(model)


def trace_risk(stats: pa.Table, num_tokens: int, model: LinearRisk, sampling: SamplingConfig,
               delta_min: float) -> pa.Table:
    """One row per token of one trace's `token_stats` rows: token_index, token_id, sampler_prob, max_drop,
    `feasible`, the model's features and `risk`. `sampling`: the rollout sampler (rollouts.sampling) whose π_s
    the rows hold; `delta_min`: the smallest drop the cliff test detects at the rollouts' N. A token whose
    max_drop is below it cannot carry a detectable drop (the sampler identity): its risk is 0, not the
    model's, which was fit on the feasible positions only."""
    stats = stats.select(STAT_COLUMNS).sort_by("token_index")
    index = stats["token_index"].to_numpy(zero_copy_only=False).astype(np.int64)
    features = token_features(stats, index / max(num_tokens, 1), sampling)
    missing = sorted(set(model.features) - set(features))
    if missing:
        raise ValueError(f"the risk model reads {missing}, which no token statistic gives")
    table = pa.table(features)
    X = feature_matrix(table, model.features)
    max_drop = feature_matrix(table, ["max_drop"])[:, 0]
    feasible = ~(max_drop < delta_min)                       # NaN: no bound, as the search treats it
    # an infeasible token's risk is 0; a feasible one without every feature has none
    risk = np.where(feasible, model.predict(np.where(np.isnan(X), 0.0, X)), 0.0)
    unknown = feasible & np.isnan(X).any(axis=1)
    out = {"token_index": index, "token_id": stats["token_id"], "sampler_prob": features["sampler_prob"],
           "max_drop": features["max_drop"], "feasible": pa.array(feasible, pa.bool_(), mask=np.isnan(max_drop))}
    out.update({name: features[name] for name in model.features})
    out["risk"] = pa.array(risk, pa.float64(), mask=unknown)
    return pa.table(out)


def text_token_stats(model_dir: str | Path, prompt_ids: list[int], response_ids: list[int], cfg,
                     sampling: SamplingConfig) -> pa.Table:
    """The `token_stats` rows of a text the pipeline never sampled, from the model at `model_dir`, computed as
    the token_stats stage computes them (`cfg`: token_stats)."""
    import torch
    from transformers import AutoModelForCausalLM

    from cliffdata.generate.token_stats import compute_token_stats

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=getattr(torch, cfg.dtype)).eval()
    trace = {"trace_id": "text", "prompt_ids": list(prompt_ids), "response_ids": list(response_ids)}
    return schema.to_table("token_stats", compute_token_stats(model, [trace], cfg.top_k, sampling, desc="risk"))


def of_trace(table: pa.Table, trace_id: str) -> pa.Table:
    """One trace's rows of a dataset keyed by trace_id."""
    return table.filter(pc.equal(table["trace_id"], trace_id))
