"""Stage `rollouts_merge`: the shards of `rollouts` joined into the datasets every later stage reads.

    python pipeline/rollouts_merge.py

Reads data/rollouts/shards/0 … shards-1, checks that they hold every trace of data/sample exactly
once, and writes data/rollouts/potentials.parquet (sorted by key: byte-identical to an unsharded
run on a deterministic backend), data/rollouts/rollout_traces.parquet and metrics/rollouts.json.
"""
import json
import logging

from cliffdata import schema
from cliffdata.search.rollouts import estimate_rollouts
from cliffdata.search.shards import merge_shards
from cliffdata.study import stage_params


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    params, _, layout = stage_params("rollouts_merge", doc=__doc__)
    traces = schema.read("traces", layout.data("traces"))
    trace_ids = traces.column("trace_id").to_pylist()
    estimate = estimate_rollouts([len(r) for r in traces.column("response_ids").to_pylist()], params.rollouts,
                                 params.engine.backend)
    table, costs = merge_shards(trace_ids, params.rollouts.shards, layout.root)
    schema.write("potentials", table, layout.data("potentials"))
    schema.write("rollout_traces", costs, layout.data("rollout_traces"))
    summary = {"num_traces": len(costs), "num_positions": sum(c["num_positions"] for c in costs),
               "num_rollouts": sum(c["num_rollouts"] for c in costs),
               "num_generated_tokens": sum(c["num_generated_tokens"] for c in costs),
               # rollouts whose answer ran past grading.timeout_seconds (ungradable: not correct)
               "num_grading_timeouts": sum(c["num_grading_timeouts"] or 0 for c in costs),
               "backend": params.engine.backend, "mode": params.rollouts.mode, **estimate}
    # the estimate's error, for calibrating the next run's budget
    summary["estimate_ratio"] = round(summary["num_generated_tokens"] / max(estimate["estimated_generated_tokens"], 1), 3)
    with open(layout.path("metrics/rollouts.json"), "w") as f:
        json.dump(summary, f, indent=2, sort_keys=True)
    print(json.dumps({**summary, "shards": params.rollouts.shards}))


if __name__ == "__main__":
    main()
