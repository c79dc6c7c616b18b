"""Rollouts: positions, early termination, token counting, checkpoint and resume (fake backend)."""
from __future__ import annotations

import dataclasses

import pytest

from cliffdata.backends import Sampling, make_backend
from cliffdata.config.generate import SamplingConfig
from cliffdata.config.search import RolloutsConfig
from cliffdata.checkpoint import UnitCheckpoint
from cliffdata.search.rollouts import (estimate_potentials, expected_tokens, run_rollouts, scored_positions,
                                       trace_key)
from project_cliffs import TEST

TRAP = 70          # a token id that, once in the prefix, makes the fake model answer wrong
SAMPLING = Sampling(temperature=0.7, max_new_tokens=8)


def cfg(**kw) -> RolloutsConfig:
    base = dict(mode="exhaustive", num_rollouts=32, early_stop_zeros=20, positions_per_batch=4,
                sampling=SamplingConfig(temperature=0.7, max_new_tokens=8))
    return RolloutsConfig(**{**base, **kw})


@pytest.fixture
def fake(tiny_tokenizer):
    enc = lambda s: tiny_tokenizer.encode(s, add_special_tokens=False)
    return make_backend("fake", correct_ids=enc("#### 7"), wrong_ids=enc("#### 3"), eos_token_id=2,
                        potential=lambda ids: 0.0 if TRAP in ids else 0.9)


def trace(trace_id: str, response: list[int]) -> dict:
    return {"trace_id": trace_id, "problem_id": "p", "prompt_ids": [1, 24, 22], "response_ids": response}


def test_positions_cover_empty_prefix_and_all_but_last():
    assert scored_positions(5, True) == [-1, 0, 1, 2, 3]
    assert scored_positions(5, False) == [0, 1, 2, 3]
    assert scored_positions(1, True) == [-1]
    assert expected_tokens(5, cfg(num_rollouts=2, score_empty_prefix=False)) == 2 * (4 + 3 + 2 + 1)


def test_cliff_at_trap_token_and_counts(fake, tiny_tokenizer):
    response = [40, 41, 42, TRAP, 43, 44, 2]
    rows, cost = estimate_potentials(trace("t", response), "7", "hash", fake, tiny_tokenizer, cfg(), SAMPLING, TEST)
    by_pos = {r["token_index"]: r for r in rows}
    assert sorted(by_pos) == list(range(-1, len(response) - 1))
    assert all(by_pos[i]["potential"] > 0.7 for i in (-1, 0, 1, 2))
    assert all(by_pos[i]["num_correct"] == 0 for i in (3, 4, 5))       # the trap is in every later prefix
    tokens_per_rollout = {True: len(tiny_tokenizer.encode("#### 7", add_special_tokens=False)) + 1,
                          False: len(tiny_tokenizer.encode("#### 3", add_special_tokens=False)) + 1}
    for r in rows:
        assert r["num_rollouts"] == 32
        assert r["num_generated_tokens"] == (r["num_correct"] * tokens_per_rollout[True]
                                             + (32 - r["num_correct"]) * tokens_per_rollout[False])
    assert cost["num_generated_tokens"] == sum(r["num_generated_tokens"] for r in rows)
    assert cost["num_positions"] == len(rows) and cost["early_stop_index"] is None


def test_answer_in_prefix_counts_as_correct(tiny_tokenizer):
    """Grading reads decode(prefix + continuation): once the prefix holds the answer, rollouts are right."""
    enc = lambda s: tiny_tokenizer.encode(s, add_special_tokens=False)
    be = make_backend("fake", correct_ids=[2], wrong_ids=[2], eos_token_id=2, potential=lambda ids: 1.0)
    response = enc("so #### 7") + [2]
    rows, _ = estimate_potentials(trace("t", response), "7", "hash", be, tiny_tokenizer, cfg(num_rollouts=4), SAMPLING, TEST)
    by_pos = {r["token_index"]: r["num_correct"] for r in rows}
    assert by_pos[len(response) - 2] == 4          # "... #### 7" is in the prefix
    assert by_pos[0] == 0


def test_early_termination_after_exactly_n_zeros(fake, tiny_tokenizer):
    response = [TRAP] + [40] * 40 + [2]
    rows, cost = estimate_potentials(trace("t", response), "7", "hash", fake, tiny_tokenizer,
                                     cfg(early_stop_zeros=20, positions_per_batch=8), SAMPLING, TEST)
    evaluated = [r["token_index"] for r in rows if not r["is_filled"]]
    assert evaluated == list(range(-1, 20))        # p[-1] > 0, then positions 0 … 19 are the 20 zeros
    filled = [r for r in rows if r["is_filled"]]
    assert [r["token_index"] for r in filled] == list(range(20, len(response) - 1))
    assert all(r["potential"] == 0 and r["num_rollouts"] == 0 and r["num_generated_tokens"] == 0 for r in filled)
    assert cost["early_stop_index"] == 20


def test_no_early_termination_when_disabled(fake, tiny_tokenizer):
    response = [TRAP] + [40] * 30 + [2]
    rows, cost = estimate_potentials(trace("t", response), "7", "hash", fake, tiny_tokenizer,
                                     cfg(early_stop_zeros=0), SAMPLING, TEST)
    assert not any(r["is_filled"] for r in rows) and cost["early_stop_index"] is None


class Crash(RuntimeError):
    pass


class CrashAfter:
    """Wraps a backend and raises once `limit` generate calls were made (a kill mid-run)."""

    def __init__(self, inner, limit):
        self.inner, self.limit, self.calls = inner, limit, 0
        self.eos_token_ids, self.deterministic = inner.eos_token_ids, True

    @staticmethod
    def calls_of(traces, config, be, tokenizer, golds, tmp_path) -> int:
        """Engine calls of an uninterrupted run from scratch."""
        counter = CrashAfter(be, limit=10**9)
        run_rollouts(traces, golds, counter, tokenizer, config, SAMPLING, UnitCheckpoint(tmp_path / "count"), TEST)
        return counter.calls

    def generate(self, requests, sampling):
        self.calls += 1
        if self.calls > self.limit:
            raise Crash("killed")
        return self.inner.generate(requests, sampling)


def test_resume_after_crash_equals_uninterrupted_run(tmp_path, tiny_tokenizer):
    enc = lambda s: tiny_tokenizer.encode(s, add_special_tokens=False)
    be = make_backend("fake", correct_ids=enc("#### 7"), wrong_ids=enc("#### 3"), eos_token_id=2,
                      potential=lambda ids: 0.05 if TRAP in ids else 0.6)
    traces = [trace(f"p/{k}#0", [40 + k, 41, TRAP, 42, 43, 2] if k % 2 else [40 + k, 41, 42, 2]) for k in range(6)]
    golds = {"p": ("7", "hash")}
    config = cfg(num_rollouts=16, positions_per_batch=2, traces_per_wave=2)
    full, full_costs = run_rollouts(traces, golds, be, tiny_tokenizer, config, SAMPLING, UnitCheckpoint(tmp_path / "a"), TEST)

    ckpt = UnitCheckpoint(tmp_path / "b")
    crashing = CrashAfter(be, limit=7)
    with pytest.raises(Crash):
        run_rollouts(traces, golds, crashing, tiny_tokenizer, config, SAMPLING, ckpt, TEST)
    finished = ckpt.done()
    assert 0 < len(finished) < len(traces)

    counting = CrashAfter(be, limit=10**9)
    resumed, costs = run_rollouts(traces, golds, counting, tiny_tokenizer, config, SAMPLING, ckpt, TEST)
    assert resumed.equals(full)
    assert [c["trace_id"] for c in costs] == [t["trace_id"] for t in traces]
    # finished waves were not recomputed: the calls of the unfinished waves only
    todo = [t for t in traces if trace_key(t) not in finished]
    assert len(todo) % 2 == 0 and todo == traces[-len(todo):]      # whole waves, the last ones
    alone = CrashAfter(be, limit=10**9)
    run_rollouts(todo, golds, alone, tiny_tokenizer, config, SAMPLING, UnitCheckpoint(tmp_path / "c"), TEST)
    assert counting.calls == alone.calls < CrashAfter.calls_of(traces, config, be, tiny_tokenizer, golds, tmp_path)
    keys = list(zip(resumed.column("trace_id").to_pylist(), resumed.column("token_index").to_pylist()))
    assert len(keys) == len(set(keys)) == sum(len(t["response_ids"]) for t in traces)

    # a resumed run whose trace came out differently under the same id (cliff_count samples its
    # traces in the stage) recomputes it: saved potentials never attach to another trace.
    changed = [dict(t, response_ids=[39] + t["response_ids"]) if i == 0 else t for i, t in enumerate(traces)]
    counting = CrashAfter(be, limit=10**9)
    again, _ = run_rollouts(changed, golds, counting, tiny_tokenizer, config, SAMPLING, ckpt, TEST)
    alone = CrashAfter(be, limit=10**9)       # the changed trace's wave, searched again whole
    run_rollouts(changed[:2], golds, alone, tiny_tokenizer, config, SAMPLING, UnitCheckpoint(tmp_path / "d"), TEST)
    assert counting.calls == alone.calls
    first = [r for r in again.to_pylist() if r["trace_id"] == changed[0]["trace_id"]]
    assert len(first) == len(changed[0]["response_ids"])


def test_estimate_rollouts_exhaustive_is_the_capped_sum_and_adaptive_is_cheaper():
    import dataclasses

    from cliffdata.config.search import AdaptiveParams
    from cliffdata.search.rollouts import MEASURED_TOKENS_PER_SECOND, estimate_rollouts, format_estimate

    cfg = RolloutsConfig(mode="exhaustive", num_rollouts=16, sampling=SamplingConfig(temperature=0.7, max_new_tokens=20))
    lengths = [5, 31, 100]
    naive = sum(16 * min(T - 1 - i, 20) for T in lengths for i in range(-1, T - 1))
    est = estimate_rollouts(lengths, cfg, "vllm")
    assert est["estimated_generated_tokens"] == naive
    assert est["estimated_seconds"] == round(naive / MEASURED_TOKENS_PER_SECOND[("vllm", "exhaustive")], 1)
    assert estimate_rollouts(lengths, cfg, "hf")["estimated_seconds"] is None
    assert "no measured throughput for hf" in format_estimate(estimate_rollouts(lengths, cfg, "hf"), 3, cfg, "hf")
    adaptive = dataclasses.replace(cfg, mode="adaptive", adaptive=AdaptiveParams(initial_rollouts=8, sweep_rollouts=4))
    full = estimate_rollouts([2000], cfg, "vllm")["estimated_generated_tokens"]
    long = estimate_rollouts([2000], adaptive, "vllm")["estimated_generated_tokens"]
    assert 0 < long < 0.35 * full                 # the sweep alone is sweep_rollouts / N = 0.25 of it at N = 16
    forks = dataclasses.replace(adaptive, mode="forks")
    assert estimate_rollouts([2000], forks, "vllm", [200])["estimated_generated_tokens"] == round(
        (2 * 200 * forks.forks.initial_rollouts + 2 * 16) * full / 16 / 2000)  # both sides of 200 forks, one pair at N
    assert estimate_rollouts([2000], forks, "vllm", [0])["estimated_generated_tokens"] == 0
    # a short trace cannot cost more than every position at N
    assert estimate_rollouts([3], adaptive, "fake")["estimated_generated_tokens"] <= estimate_rollouts([3], cfg, "fake")["estimated_generated_tokens"]


def test_one_scheduler_across_models_packs_adapters_by_the_backends_batch_key(tmp_path, tiny_tokenizer):
    """Traces that carry an adapter share engine calls wherever `batch_key` lets them (here, vLLM's rule:
    every adapter together, the base apart); each trace's potentials equal its search alone, and the
    checkpoint keys a trace by its adapter too."""
    from cliffdata.backends import Backend
    from cliffdata.search.rollouts import search_wave

    enc = lambda s: tiny_tokenizer.encode(s, add_special_tokens=False)
    inner = make_backend("fake", correct_ids=enc("#### 7"), wrong_ids=enc("#### 3"), eos_token_id=2,
                         potential=lambda ids: 0.05 if TRAP in ids else 0.6)

    class Lumping(Backend):                  # records each call's adapters; the fake model answers for all
        def __init__(self):
            self.calls, self.eos_token_ids = [], inner.eos_token_ids

        def generate(self, requests, sampling):
            self.calls.append({r.adapter for r in requests})
            return inner.generate([dataclasses.replace(r, adapter=None) for r in requests], sampling)

        def batch_key(self, adapter):
            return adapter is not None

    models = [None, "a", "b"]
    traces = [dict(trace(f"{m}/p{k}#0", [40 + k, 41, TRAP, 42, 2]), adapter=m) for k in range(2) for m in models]
    golds = {"p": ("7", "hash")}
    config = cfg(num_rollouts=4, positions_per_batch=6, traces_per_wave=6)
    be = Lumping()
    together = search_wave(traces, golds, be, tiny_tokenizer, config, SAMPLING, TEST)
    assert all(c == {None} or None not in c for c in be.calls)          # the base never shares a call
    assert any(c == {"a", "b"} for c in be.calls)                       # the adapters do
    timeless = lambda out: (out[0], {k: v for k, v in out[1].items() if k != "wall_seconds"})
    for t, out in zip(traces, together):
        assert timeless(out) == timeless(search_wave([t], golds, Lumping(), tiny_tokenizer, config, SAMPLING, TEST)[0])
    plain = {k: v for k, v in traces[1].items() if k != "adapter"}
    assert len({trace_key(traces[1]), trace_key(dict(traces[1], adapter="b")), trace_key(plain)}) == 3
