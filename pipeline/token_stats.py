"""Stage `token_stats`: one teacher-forced pass per trace on the raw distribution (protocol §4), plus
the rollout sampler's probability of each token (`rollouts.sampling`: the [G] identity).

    python pipeline/token_stats.py
"""
import logging

import torch
from transformers import AutoModelForCausalLM

from cliffdata import schema
from cliffdata.config import load_params
from cliffdata.token_stats import compute_token_stats


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    params = load_params()
    cfg = params.token_stats
    traces = schema.read("traces", schema.PATHS["traces"]).to_pylist()
    model = AutoModelForCausalLM.from_pretrained("models/base", dtype=getattr(torch, cfg.dtype)).eval()
    rows = compute_token_stats(model, traces, cfg.top_k, params.rollouts.sampling)
    schema.write("token_stats", rows, schema.PATHS["token_stats"])
    print(f"token_stats: {len(rows)} tokens from {len(traces)} traces")


if __name__ == "__main__":
    main()
