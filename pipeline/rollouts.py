"""Stage `rollouts` (a DVC matrix, one stage per shard): token-wise potentials by N rollouts per
position (protocol §1, §3) for the traces of one shard (cliffdata/search/shards.py).

    python pipeline/rollouts.py --shard 0

Writes data/rollouts/shards/<shard>/{potentials,rollout_traces}.parquet; `rollouts_merge` joins the
shards. `rollouts.engine: ray` runs the shard's traces on a Ray Data actor pool of the engine.
Checkpoints every finished trace under .cache/rollouts/<fingerprint>/ (outside DVC's outs, which
DVC deletes before a run); a killed run resumes there. The folder is removed after success.
"""
import dataclasses
import json
import logging
import time

from transformers import AutoTokenizer

from cliffdata import grading, schema
from cliffdata.backends import open_backend
from cliffdata.checkpoint import UnitCheckpoint
from cliffdata.generate.sampling import golds_by_problem
from cliffdata.schema import file_digest, tree_digest
from cliffdata.search.forks import fork_positions
from cliffdata.search.rollouts import (estimate_rollouts, fingerprint, format_estimate, max_drops_of,
                                       run_rollouts, scored_positions)
from cliffdata.search.shards import select_shard, shard_dir
from cliffdata.study import Layout, stage_params


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    params, args, layout = stage_params("rollouts", doc=__doc__, arguments=lambda ap: ap.add_argument(
        "--shard", default="0", help="shard index in [0, rollouts.shards): DVC's matrix item; `all`: every shard, "
                                     "one after another (the study's models: one stage each)"))
    shards = range(params.rollouts.shards) if args.shard == "all" else [shard_index(args.shard, params.rollouts.shards)]
    for shard in shards:
        run_shard(params, layout, shard)


def shard_index(text: str, shards: int) -> int:
    if not text.isdigit() or int(text) >= shards:
        raise SystemExit(f"--shard {text}: expected `all` or an index in [0, rollouts.shards = {shards})")
    return int(text)


def run_shard(params, layout: Layout, shard: int) -> None:
    cfg = params.rollouts
    grading.configure(params.grading)
    # the adaptive and fork searches decide by the cliff test and its floor: cliffs.test only (dvc.yaml
    # lists it, so cliffs.use or fdr_q re-run no rollouts)
    test = params.cliffs.test
    traces = select_shard(schema.read("traces", layout.data("traces")).to_pylist(), shard, cfg)
    # mode forks: the bound each token puts on its drop (token_stats max_drop = 1 - sampler_prob)
    max_drops = max_drops_of(layout.data("token_stats"), {t["trace_id"] for t in traces}) if cfg.mode == "forks" else None
    problems = schema.read("problems", layout.data("problems")).to_pylist()
    golds = golds_by_problem(problems)
    num_forks = ([len(fork_positions(scored_positions(len(t["response_ids"]), cfg.score_empty_prefix),
                                     max_drops[t["trace_id"]], cfg.num_rollouts, test)) for t in traces]
                 if max_drops is not None else None)
    estimate = estimate_rollouts([len(t["response_ids"]) for t in traces], cfg, params.engine.backend, num_forks)
    print(format_estimate(estimate, len(traces), cfg, params.engine.backend), flush=True)
    # everything a finished trace's potentials depend on: params, traces, gold answers and budgets,
    # the model's weights and tokenizer, and the grading code and its time limit
    model_dir = str(layout.path("models/base"))
    key = fingerprint(dataclasses.asdict(cfg), dataclasses.asdict(params.engine.resolved()), dataclasses.asdict(test),
                      dataclasses.asdict(params.grading),
                      file_digest(layout.data("traces")),
                      file_digest(layout.data("problems")), tree_digest(model_dir), file_digest(grading.__file__),
                      shard, file_digest(layout.data("token_stats")) if max_drops is not None else None)
    checkpoint = UnitCheckpoint(layout.path(f".cache/rollouts/{key}"))
    started = time.perf_counter()
    if cfg.engine == "ray":
        from cliffdata.search.ray_rollouts import run_rollouts_ray
        table, costs = run_rollouts_ray(traces, golds, model_dir, params.engine, cfg, checkpoint, test, max_drops,
                                        params.grading)
    else:
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        with open_backend(params.engine, model_dir, seed=cfg.seed) as backend:
            table, costs = run_rollouts(traces, golds, backend, tokenizer, cfg, cfg.sampling, checkpoint, test,
                                        max_drops=max_drops)
    schema.write("potentials", table, shard_dir(shard, layout.root) / "potentials.parquet")
    schema.write("rollout_traces", costs, shard_dir(shard, layout.root) / "rollout_traces.parquet")
    checkpoint.remove()
    print(json.dumps({"shard": shard, "num_traces": len(costs), "engine": cfg.engine,
                      "num_generated_tokens": sum(c["num_generated_tokens"] for c in costs),
                      "num_grading_timeouts": sum(c["num_grading_timeouts"] or 0 for c in costs),
                      "wall_seconds": round(time.perf_counter() - started, 1)}))


if __name__ == "__main__":
    main()
