"""`rollouts.engine: ray`: a shard's traces as a Ray Data pipeline over an actor pool of our backend.

    ray.data.from_items(traces) -> map_batches(RolloutActor, compute=ActorPoolStrategy(size=num_actors))

Each actor opens the params' engine once (one vLLM per GPU with `num_gpus_per_actor: 1` on a
cluster, HF or vLLM CPU replicas locally) and runs `estimate_potentials` on whole traces, so a
trace's prefixes share one prefix cache and every request keeps its (seed, trace_id, position)
seed: on a deterministic backend the potentials equal the single-process run. The driver streams
finished traces into the same checkpoint folder as `engine: local`, one `UnitCheckpoint` unit per
trace (resume works the same), and returns the same tables. The model path must be readable from every
node (shared storage or a hub id), and `cliffdata` importable there (installed, or
`runtime_env={"working_dir": ...}`).
"""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
from tqdm.auto import tqdm

from cliffdata.checkpoint import UnitCheckpoint
from cliffdata.config.cliffs import CliffTest
from cliffdata.config.generate import EngineConfig, GradingConfig
from cliffdata.config.search import RolloutsConfig
from cliffdata.generate.sampling import Gold
from cliffdata.search.rollouts import load_traces, save_trace, unfinished_waves, wave_cost


class RolloutActor:
    """One backend replica: traces in (a JSON payload per row), potentials and cost rows out (JSON)."""

    def __init__(self, model_path: str, engine: EngineConfig, cfg: RolloutsConfig, test: CliffTest,
                 grading_cfg: GradingConfig = GradingConfig()):
        from transformers import AutoTokenizer

        from cliffdata import grading
        from cliffdata.backends import open_backend

        grading.configure(grading_cfg)       # this actor's grader: the stage's limit (timeouts reach the cost rows)
        self.cfg, self.sampling, self.test = cfg, cfg.sampling, test
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.backend = open_backend(engine, model_path, seed=cfg.seed)

    def __call__(self, batch: dict) -> dict:
        from cliffdata.search.rollouts import search_wave

        out: dict[str, list[str]] = {"trace_id": [], "potentials": [], "cost": []}
        for payload in batch["payload"]:
            wave = json.loads(payload)      # one wave: its traces' searches share engine calls, as in run_rollouts
            traces = [item["trace"] for item in wave]
            golds = {item["trace"]["problem_id"]: Gold(*item["gold"]) for item in wave}
            max_drops = {item["trace"]["trace_id"]: {int(i): m for i, m in item["max_drop"].items()}
                         for item in wave if item["max_drop"] is not None} or None
            for trace, (rows, cost) in zip(traces, search_wave(traces, golds, self.backend, self.tokenizer, self.cfg,
                                                               self.sampling, self.test, max_drops)):
                out["trace_id"].append(trace["trace_id"])
                out["potentials"].append(json.dumps(rows))
                out["cost"].append(json.dumps(cost))
        return out


def run_rollouts_ray(traces: list[dict], golds: dict[str, Gold], model_path: str, engine: EngineConfig,
                     cfg: RolloutsConfig, checkpoint: UnitCheckpoint, test: CliffTest,
                     max_drops: dict[str, dict[int, float | None]] | None = None,
                     grading_cfg: GradingConfig = GradingConfig()) -> tuple[pa.Table, list[dict]]:
    """Like `rollouts.run_rollouts`, with the traces spread over `cfg.ray.num_actors` backend actors, each
    searching with `test` (params `cliffs.test`) and grading with `grading_cfg` (params `grading`).

    Joins the Ray instance already initialised in this process, else `ray.init(address=cfg.ray.address)`
    (None starts a local one, shut down again at the end).
    """
    import ray

    todo = unfinished_waves(traces, cfg, checkpoint)
    num_todo = sum(map(len, todo))
    started_here = bool(todo) and not ray.is_initialized()
    if started_here:
        ray.init(address=cfg.ray.address, include_dashboard=False, log_to_driver=False)
    try:
        if todo:
            # Costliest waves first: an actor pool drains a queue, so this is the LPT order of shards.py.
            todo = sorted(todo, key=lambda w: (-wave_cost(w, cfg), w[0]["trace_id"]))
            items = [{"payload": json.dumps([
                {"trace": {k: t[k] for k in ("trace_id", "problem_id", "prompt_ids", "response_ids")},
                 "gold": list(Gold(*golds[t["problem_id"]])),
                 "max_drop": (max_drops or {}).get(t["trace_id"])} for t in w])} for w in todo]
            ds = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
                RolloutActor, batch_size=1, batch_format="numpy",
                fn_constructor_kwargs={"model_path": str(Path(model_path).resolve()) if Path(model_path).exists()
                                       else model_path, "engine": engine, "cfg": cfg,
                                       "test": test, "grading_cfg": grading_cfg},
                compute=ray.data.ActorPoolStrategy(size=cfg.ray.num_actors),
                num_cpus=cfg.ray.num_cpus_per_actor, num_gpus=cfg.ray.num_gpus_per_actor or None)
            bar = tqdm(total=num_todo, desc="rollouts (ray)", unit="trace")
            by_id = {t["trace_id"]: t for w in todo for t in w}
            for row in ds.iter_rows():
                save_trace(checkpoint, by_id[str(row["trace_id"])], json.loads(row["potentials"]),
                           json.loads(row["cost"]))
                bar.update(1)
            bar.close()
    finally:
        if started_here:
            ray.shutdown()
    return load_traces(checkpoint, traces)
