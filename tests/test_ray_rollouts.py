"""`rollouts.engine: ray` on a local Ray instance: HF backend actors on the tiny model give the
single-process potentials, and a resumed run skips the checkpointed traces."""
from __future__ import annotations

import importlib.util

import pytest

from cliffdata.backends import make_backend
from cliffdata.checkpoint import UnitCheckpoint
from cliffdata.config.generate import EngineConfig, SamplingConfig
from cliffdata.config.search import AdaptiveParams, RayParams, RolloutsConfig
from cliffdata.search.rollouts import run_rollouts, save_trace
from project_cliffs import TEST

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="ray is not installed (extra [ray])")]


@pytest.fixture(scope="module")
def local_ray():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.mark.parametrize("mode", ["exhaustive", "adaptive"])
def test_ray_actor_pool_equals_single_process(local_ray, tmp_path, tiny_model_dir, tiny_tokenizer, mode):
    from cliffdata.search.ray_rollouts import run_rollouts_ray

    cfg = RolloutsConfig(mode=mode, num_rollouts=4, early_stop_zeros=0, positions_per_batch=3,
                         sampling=SamplingConfig(temperature=1.0, max_new_tokens=12), engine="ray",
                         ray=RayParams(num_actors=2, num_cpus_per_actor=1),
                         adaptive=AdaptiveParams(initial_rollouts=4, grid_points=3, min_stride=2, sweep_rollouts=2))
    engine = EngineConfig(backend="hf", dtype="float32", hf_max_batch=16)
    traces = [{"trace_id": f"arith/add1-{k:05d}#0", "problem_id": f"arith/add1-{k:05d}", "prompt_ids": [1, 24, 22],
               "response_ids": [40 + (k + j) % 20 for j in range(n - 1)] + [2]} for k, n in enumerate([7, 4, 9, 5])]
    golds = {t["problem_id"]: ("7", "hash") for t in traces}

    backend = make_backend("hf", str(tiny_model_dir), dtype="float32", max_batch=16)
    single, single_costs = run_rollouts(traces, golds, backend, tiny_tokenizer, cfg, cfg.sampling,
                                        UnitCheckpoint(tmp_path / "single"), TEST)
    # rollouts end at sampled EOS, so the token counts carry the seeds: not a constant table
    assert len(set(single.column("num_generated_tokens").to_pylist())) > 1
    if mode == "adaptive":      # the search skipped positions (num_rollouts 0) or sampled some with fewer rollouts
        assert set(single.column("num_rollouts").to_pylist()) - {4}

    ckpt = UnitCheckpoint(tmp_path / "ray")
    save_trace(ckpt, *_rows_of(single, single_costs, traces[0]))      # one trace already done: a resume
    table, costs = run_rollouts_ray(traces, golds, str(tiny_model_dir), engine, cfg, ckpt, TEST)
    assert table.equals(single)
    assert [c["trace_id"] for c in costs] == [t["trace_id"] for t in traces]


def _rows_of(table, costs, trace):
    rows = [r for r in table.to_pylist() if r["trace_id"] == trace["trace_id"]]
    return trace, rows, next(c for c in costs if c["trace_id"] == trace["trace_id"])
