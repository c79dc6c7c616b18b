"""Stage `rollouts`: token-wise potentials by N rollouts per position (protocol §1, §3).

    python pipeline/rollouts.py

Checkpoints every finished trace under .cache/rollouts/<fingerprint>/ (outside DVC's outs, which
DVC deletes before a run); a killed run resumes there. The folder is removed after success.
"""
import dataclasses
import json
import logging
import time

from transformers import AutoTokenizer

from cliffdata import schema
from cliffdata.backends import open_backend
from cliffdata.config import load_params
from cliffdata.rollouts import Checkpoint, fingerprint, run_rollouts
from cliffdata.schema import file_digest
from cliffdata.sampling import to_sampling


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    params = load_params()
    cfg = params.rollouts
    traces = schema.read("traces", schema.PATHS["traces"]).to_pylist()
    problems = schema.read("problems", schema.PATHS["problems"]).to_pylist()
    golds = {p["problem_id"]: (p["answer"], p["answer_format"]) for p in problems}
    key = fingerprint(dataclasses.asdict(cfg), dataclasses.asdict(params.engine),
                      file_digest(schema.PATHS["traces"]), file_digest("models/base/config.json"))
    checkpoint = Checkpoint(f".cache/rollouts/{key}")
    tokenizer = AutoTokenizer.from_pretrained("models/base")
    started = time.perf_counter()
    with open_backend(params.engine, "models/base", seed=cfg.seed) as backend:
        table, costs = run_rollouts(traces, golds, backend, tokenizer, cfg, to_sampling(cfg.sampling), checkpoint)
    schema.write("potentials", table, schema.PATHS["potentials"])
    schema.write("rollout_traces", costs, schema.PATHS["rollout_traces"])
    summary = {"num_traces": len(costs), "num_positions": sum(c["num_positions"] for c in costs),
               "num_rollouts": sum(c["num_rollouts"] for c in costs),
               "num_generated_tokens": sum(c["num_generated_tokens"] for c in costs),
               "backend": params.engine.backend, "mode": cfg.mode}
    with open("metrics/rollouts.json", "w") as f:
        json.dump(summary, f, indent=2, sort_keys=True)
    checkpoint.remove()
    print(json.dumps({**summary, "wall_seconds": round(time.perf_counter() - started, 1)}))


if __name__ == "__main__":
    main()
