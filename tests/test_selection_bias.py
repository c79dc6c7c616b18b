"""Fresh estimates after selection (candidates.fresh_estimates): at a false cliff, a candidate exactly as
good as the prefix is labelled a cliff at about the test's own rate when p[i-1] comes from the replicate
stage's fresh rollouts, and far more often when it comes from the rollouts that selected the cliff.
The simulation runs the project's own candidate_rows and run_candidates, only the rollouts drawn."""
import numpy as np
import pyarrow as pa

from cliffdata import schema
from cliffdata.cliffs.stats import is_cliff
from cliffdata.config.cliffs import CliffTest
from cliffdata.experiments import candidates
from cliffdata.generate.sampling import Resampled

N = 16
TEST = CliffTest(delta0=0.1, z=1.645, min_rollouts=8)          # params.yaml cliffs.test


def false_cliffs(rng: np.random.Generator, count: int) -> list[dict]:
    """Positions whose two sides share one true potential p, kept only where the detection test fired
    (the selection), with a replicate draw of each side and a candidate whose true potential is p."""
    out = []
    while len(out) < count:
        p = rng.uniform(0.3, 0.9)
        k_prev, k_curr = rng.binomial(N, p, size=2)
        if not is_cliff(k_prev, N, k_curr, N, TEST):
            continue
        out.append({"p": p, "k_prev": int(k_prev), "k_curr": int(k_curr), "fresh_prev": int(rng.binomial(N, p)),
                    "fresh_curr": int(rng.binomial(N, p)), "k_candidate": int(rng.binomial(N, p))})
    return out


def world(draws: list[dict]) -> tuple[list[dict], list[dict], pa.Table, pa.Table, dict]:
    """One trace per draw: the cliff at token 1 (token 7), its alternative (token 9, rank 1)."""
    traces, cliffs, stats, pots, fresh = [], [], [], [], {}
    for i, d in enumerate(draws):
        t = f"t{i:05d}"
        traces.append({"trace_id": t, "problem_id": f"q{i:05d}", "prompt_ids": [1], "response_ids": [5, 7]})
        cliffs.append({"trace_id": t, "token_index": 1, "token_id": 7})
        stats.append({"trace_id": t, "token_index": 1, "token_id": 7, "logprob": np.log(0.4), "rank": 2,
                      "entropy": 0.7, "entropy_full": 0.7, "greedy_token_id": 9, "is_greedy": False,
                      "top_ids": [9, 7], "top_probs": [0.6, 0.4], "sampler_prob": 0.4, "max_drop": 0.6})
        for j, k in ((0, d["k_prev"]), (1, d["k_curr"])):
            pots.append({"trace_id": t, "token_index": j, "mode": "exhaustive", "num_rollouts": N, "num_correct": k,
                         "potential": k / N, "is_filled": False, "num_generated_tokens": 0})
        fresh[(t, 1)] = {"num_rollouts_prev": N, "num_correct_prev": d["fresh_prev"], "num_rollouts": N,
                         "num_correct": d["fresh_curr"]}
    return traces, cliffs, schema.to_table("token_stats", stats), schema.to_table("potentials", pots), fresh


def labelled_cliff_share(draws, monkeypatch, use_fresh: bool) -> float:
    traces, cliffs, stats, pots, fresh = world(draws)
    requests = candidates.candidate_rows(traces, cliffs, stats, pots, 1, fresh if use_fresh else None)
    by_trace = {f"t{i:05d}": d["k_candidate"] for i, d in enumerate(draws)}
    monkeypatch.setattr(candidates, "resample_by_problem",
                        lambda todo, *a, **k: [Resampled(N, by_trace[r["trace_id"]], 0) for r in todo])
    rows = candidates.run_candidates(requests, traces, {}, None, None, N, None, 0, TEST)
    alternatives = [r for r in rows if not r["is_cliff_token"]]
    assert len(alternatives) == len(draws)
    return float(np.mean([r["is_cliff"] for r in alternatives]))


def test_independent_estimates_keep_an_as_good_candidate_from_being_labelled_a_cliff(monkeypatch):
    draws = false_cliffs(np.random.default_rng(5), 3000)
    reused = labelled_cliff_share(draws, monkeypatch, use_fresh=False)
    fresh = labelled_cliff_share(draws, monkeypatch, use_fresh=True)
    assert reused > 0.12                  # selection on a high p̂[i-1]: the reused estimate calls it a cliff often
    assert fresh <= 0.05, (reused, fresh)


def test_replicate_rollouts_replace_p_prev_and_the_cliff_tokens_potential(monkeypatch):
    draws = [{"p": 0.5, "k_prev": 15, "k_curr": 2, "fresh_prev": 9, "fresh_curr": 7, "k_candidate": 8}]
    traces, cliffs, stats, pots, fresh = world(draws)
    reused = candidates.candidate_rows(traces, cliffs, stats, pots, 1)
    again = candidates.candidate_rows(traces, cliffs, stats, pots, 1, fresh)
    own = {r["is_cliff_token"]: r for r in reused}, {r["is_cliff_token"]: r for r in again}
    assert (own[0][False]["num_correct_prev"], own[0][True]["num_correct"]) == (15, 2)
    assert (own[1][False]["num_correct_prev"], own[1][True]["num_correct"]) == (9, 7)
    try:
        candidates.candidate_rows(traces, cliffs, stats, pots, 1, {})
    except ValueError as e:
        assert "has no replicate row" in str(e)
    else:
        raise AssertionError("a cliff without a replicate row must be refused")
