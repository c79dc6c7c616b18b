"""Stage `token_stats`: one teacher-forced pass per trace on the raw distribution (protocol §4), plus
the rollout sampler's probability of each token (`rollouts.sampling`: the sampler identity's π_s).

    python pipeline/token_stats.py
"""
import logging

import torch
from transformers import AutoModelForCausalLM

from cliffdata import schema
from cliffdata.generate.token_stats import compute_token_stats
from cliffdata.study import stage_params


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    params, _, layout = stage_params("token_stats", doc=__doc__)
    cfg = params.token_stats
    traces = schema.read("traces", layout.data("traces")).to_pylist()
    model_dir = str(layout.path("models/base"))
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, cfg.dtype)).eval()
    rows = compute_token_stats(model, traces, cfg.top_k, params.rollouts.sampling)
    schema.write("token_stats", rows, layout.data("token_stats"))
    print(f"token_stats: {len(rows)} tokens from {len(traces)} traces")


if __name__ == "__main__":
    main()
