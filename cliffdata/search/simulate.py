"""The searches on simulated potential curves: every method searches each ground-truth curve
(cliffdata/search/curves.py) through a binomial rollout oracle, and the comparison pools recall, false
cliffs and generated tokens against exhaustive mode (bench/adaptive.py reports it).

    settings = SearchSettings.from_params(load_params())      # the pipeline's own cliff test and knobs
    report = run_seeds(lambda seed: make_curves(126, seed, settings.test), range(10), settings)

A request (i, n) to the oracle returns Binomial(n, p[i]) correct rollouts and charges n·(T − 1 − i)
generated tokens (each rollout regenerates the rest of the trace). Methods: exhaustive (every position
with N = 64, paper mode), adaptive and forks (the pipeline's searches at N = 64 with `settings`), pts
(bisection, cliffdata/search/pts.py). A true cliff is a position where the protocol test would fire at
N = 64 on the expected counts (`true_cliffs`); the definitions of every reported figure are `DEFINITIONS`.
Deterministic for a seed: every (curve, method) oracle draws from its own seeded generator.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from cliffdata.cliffs.stats import is_cliff
from cliffdata.config.cliffs import CliffTest
from cliffdata.config.params import Params
from cliffdata.config.search import AdaptiveParams, ForksParams
from cliffdata.search.adaptive import adaptive_search
from cliffdata.search.base import Evaluated, cliffs_from_evaluated
from cliffdata.search.exhaustive import exhaustive_search
from cliffdata.search.forks import fork_search
from cliffdata.search.pts import PTS_N, PTS_THRESHOLD, pts_search

EXHAUSTIVE_N = 64                     # the simulation's N (paper mode); the pipeline's own N is rollouts.num_rollouts
FALSE_CLIFFS_EPS = 0.01
LONG_TRACE = 200                      # the traces the headline ratios pool: this many tokens or more
DEFINITIONS = {
    "true_cliff": "position i with is_cliff(round(64·p[i−1]), 64, round(64·p[i]), 64): the protocol test "
                  "would fire at N = 64 on the expected counts",
    "recall": "detected true cliffs / true cliffs, pooled over traces",
    "false_cliffs_per_trace": "reported cliffs that are not true cliffs / number of traces",
    "first_cliff_agreement": "share of traces whose first reported cliff is the first true cliff (none = none agrees)",
    "generated_tokens": "each rollout from position i is charged the remaining trace length T − 1 − i",
    "false_cliffs_ratio": f"(adaptive + {FALSE_CLIFFS_EPS}) / (exhaustive + {FALSE_CLIFFS_EPS}) false cliffs per trace",
}


@dataclass(frozen=True)
class SearchSettings:
    """What a simulation searches with: the cliff test (params `cliffs.test`) and the knobs of the adaptive
    and fork searches (`rollouts.adaptive`, `rollouts.forks`); `from_params` takes params.yaml's own objects,
    the ones the `rollouts` stage passes."""
    test: CliffTest
    adaptive: AdaptiveParams
    forks: ForksParams

    @classmethod
    def from_params(cls, params: Params) -> SearchSettings:
        return cls(test=params.cliffs.test, adaptive=params.rollouts.adaptive, forks=params.rollouts.forks)


def true_cliffs(p: np.ndarray, test: CliffTest) -> list[int]:
    """Positions where the cliff test `test` fires at N = 64 on the expected counts round(64·p)."""
    k = np.rint(EXHAUSTIVE_N * np.asarray(p, dtype=np.float64)).astype(np.int64)
    flags = is_cliff(k[:-1], EXHAUSTIVE_N, k[1:], EXHAUSTIVE_N, test)
    return (np.flatnonzero(flags) + 1).tolist()


# --- the simulated oracle and the methods ----------------------------------------------------------

class BinomialOracle:
    """Rollouts on a ground-truth curve: Binomial(n, p[i]) correct, each charged T − 1 − i tokens."""

    def __init__(self, p: Sequence[float], rng: np.random.Generator):
        self.p = np.asarray(p, dtype=np.float64)
        self.rng = rng
        self.num_rollouts = 0
        self.num_generated_tokens = 0

    def rollouts(self, requests: list[tuple[int, int]]) -> list[tuple[int, int]]:
        if not requests:
            return []
        req = np.asarray(requests, dtype=np.int64).reshape(-1, 2)  # (R, 2)
        idx, n = req[:, 0], req[:, 1]
        T = len(self.p)
        if (idx < 0).any() or (idx >= T).any() or (n < 0).any():
            raise ValueError(f"requests need 0 <= token_index < {T} and n >= 0, got {requests[:5]}…")
        num_correct = self.rng.binomial(n, self.p[idx])
        num_tokens = n * (T - 1 - idx)
        self.num_rollouts += int(n.sum())
        self.num_generated_tokens += int(num_tokens.sum())
        return list(zip(num_correct.tolist(), num_tokens.tolist()))



def _run_exhaustive(oracle, positions, settings: SearchSettings):
    evaluated = exhaustive_search(oracle, positions, EXHAUSTIVE_N)
    return evaluated, cliffs_from_evaluated(evaluated, settings.test)


def _run_adaptive(oracle, positions, settings: SearchSettings):
    evaluated = adaptive_search(oracle, positions, settings.adaptive, EXHAUSTIVE_N, settings.test)
    return evaluated, cliffs_from_evaluated(evaluated, settings.test)


def _run_pts(oracle, positions, settings: SearchSettings):
    return pts_search(oracle, positions)


def _run_forks(oracle, positions, max_drop, settings: SearchSettings):
    evaluated = fork_search(oracle, positions, max_drop, settings.forks, EXHAUSTIVE_N, settings.test)
    return evaluated, cliffs_from_evaluated(evaluated, settings.test)


# the order seeds each method's oracle (its index): a new method goes last
METHODS: dict[str, Callable[..., tuple[Evaluated, list[int]]]] = {
    "exhaustive": _run_exhaustive, "adaptive": _run_adaptive, "pts": _run_pts, "forks": _run_forks,
}
NEEDS_SAMPLER_PROB = {"forks"}        # runs only on curves that carry sampler probabilities


# --- the comparison ------------------------------------------------------------------------------

def score_trace(true: list[int], reported: list[int]) -> dict:
    """Detected true cliffs, false cliffs and first-cliff agreement of one method on one trace."""
    true_set, reported_set = set(true), set(reported)
    first = min(reported_set) if reported_set else None
    return {"num_detected": len(true_set & reported_set), "num_false": len(reported_set - true_set),
            "first_cliff": first, "first_cliff_agrees": first == (min(true_set) if true_set else None)}


def run_curve(p: np.ndarray, curve_index: int, seed: int, methods: Sequence[str], settings: SearchSettings,
              sampler_prob: np.ndarray | None = None) -> dict:
    """Every method on one curve, each with its own oracle generator seeded by (seed, curve, method);
    the fork-aware search only where the curve has sampler probabilities."""
    positions = list(range(len(p)))
    true = true_cliffs(p, settings.test)
    out = {"length": len(p), "true_cliffs": true, "methods": {}}
    for name in methods:
        if name in NEEDS_SAMPLER_PROB and sampler_prob is None:
            continue
        oracle = BinomialOracle(p, np.random.default_rng([seed, curve_index, list(METHODS).index(name)]))
        if name in NEEDS_SAMPLER_PROB:
            evaluated, cliffs = METHODS[name](oracle, positions, dict(enumerate((1.0 - sampler_prob).tolist())), settings)
        else:
            evaluated, cliffs = METHODS[name](oracle, positions, settings)
        assert sum(v[0] for v in evaluated.values()) == oracle.num_rollouts, \
            f"{name}: evaluated rollouts disagree with what the oracle was asked for"
        out["methods"][name] = {"cliffs": [int(i) for i in cliffs], **score_trace(true, cliffs),
                                "num_rollouts": oracle.num_rollouts,
                                "num_generated_tokens": oracle.num_generated_tokens}
    return out


def _ratio(a, b):
    return None if a is None or not b else round(a / b, 4)


def summarise(traces: list[dict], method: str) -> dict | None:
    """Pooled metrics of one method over the traces it ran on (None: it ran on none)."""
    traces = [t for t in traces if method in t["methods"]]
    if not traces:
        return None
    runs = [t["methods"][method] for t in traces]
    num, num_true = len(traces), sum(len(t["true_cliffs"]) for t in traces)
    detected = sum(r["num_detected"] for r in runs)
    rollouts = sum(r["num_rollouts"] for r in runs)
    tokens = sum(r["num_generated_tokens"] for r in runs)
    return {
        "num_traces": num, "num_true_cliffs": num_true, "num_detected": detected,
        "recall": _ratio(detected, num_true),
        "false_cliffs_per_trace": _ratio(sum(r["num_false"] for r in runs), num),
        "first_cliff_agreement": _ratio(sum(r["first_cliff_agrees"] for r in runs), num),
        "num_rollouts": rollouts, "num_generated_tokens": tokens,
        "rollouts_per_trace": _ratio(rollouts, num), "tokens_per_trace": _ratio(tokens, num),
    }


RATIO_KEYS = ("recall_ratio", "false_cliffs_ratio", "token_ratio")


def ratios(group: dict, method: str) -> dict:
    """`method` against exhaustive on one group's summaries (None where either did not run)."""
    m, ex = group.get(method), group.get("exhaustive")
    if m is None or ex is None:
        return dict.fromkeys(RATIO_KEYS)
    return {"recall_ratio": _ratio(m["recall"], ex["recall"]),
            "false_cliffs_ratio": round((m["false_cliffs_per_trace"] + FALSE_CLIFFS_EPS)
                                        / (ex["false_cliffs_per_trace"] + FALSE_CLIFFS_EPS), 4),
            "token_ratio": _ratio(m["num_generated_tokens"], ex["num_generated_tokens"]),
            "false_cliffs_per_trace": {method: m["false_cliffs_per_trace"], "exhaustive": ex["false_cliffs_per_trace"]},
            "false_cliffs_eps": FALSE_CLIFFS_EPS}


def run_sim(curves: list[dict], seed: int, settings: SearchSettings, methods: Sequence[str] = tuple(METHODS)) -> dict:
    """The simulated comparison: per-trace results, summaries by group and the ratios to exhaustive.

    Top-level `recall_ratio`, `false_cliffs_ratio`, `token_ratio`: adaptive vs exhaustive (no token
    probabilities), over the traces of length >= 200; `forks`: the same for the fork-aware search on
    the curves that carry sampler probabilities (None where none does)."""
    traces = []
    for j, c in enumerate(tqdm(curves, desc="curves", disable=None)):
        sampler_prob = c.get("sampler_prob")
        traces.append({"kind": c["kind"], **run_curve(np.asarray(c["p"], dtype=np.float64), j, seed, methods, settings,
                                                      None if sampler_prob is None else np.asarray(sampler_prob))})
    groups = {"all": traces, f"length>={LONG_TRACE}": [t for t in traces if t["length"] >= LONG_TRACE]}
    groups |= {f"kind:{k}": [t for t in traces if t["kind"] == k] for k in dict.fromkeys(t["kind"] for t in traces)}
    summary = {g: {m: s for m in methods if (s := summarise(ts, m)) is not None} for g, ts in groups.items() if ts}
    long = summary.get(f"length>={LONG_TRACE}", {})
    return {key: value for key, value in ratios(long, "adaptive").items() if key in RATIO_KEYS or long} | {
        "forks": ratios(long, "forks") if "forks" in long else None,
        "seed": seed, "num_curves": len(curves), "definitions": DEFINITIONS,
        "methods": {"exhaustive": {"num_rollouts": EXHAUSTIVE_N},
                    "adaptive": {"num_rollouts": EXHAUSTIVE_N, **dataclasses.asdict(settings.adaptive)},
                    "forks": {"num_rollouts": EXHAUSTIVE_N, **dataclasses.asdict(settings.forks)},
                    "pts": {"num_rollouts": PTS_N, "threshold": PTS_THRESHOLD}},
        "summary": summary, "traces": traces}


def run_seeds(curves_of: Callable[[int], list[dict]], seeds: Sequence[int], settings: SearchSettings,
              methods: Sequence[str] = tuple(METHODS)) -> dict:
    """`run_sim` once per seed (`curves_of(seed)`: the curves of that seed; fixed curves vary only the
    oracle's draws). The top-level ratios are means over the seeds, with each seed's beside them;
    the per-trace results are those of the first seed."""
    runs = [run_sim(curves_of(s), s, settings, methods) for s in seeds]
    def mean(values):
        values = [v for v in values if v is not None]
        return round(float(np.mean(values)), 4) if values else None
    report = dict(runs[0])
    for key in RATIO_KEYS:
        report[key] = mean([r.get(key) for r in runs])
        report.setdefault("per_seed", {})[key] = [r.get(key) for r in runs]
    if runs[0]["forks"] is not None:
        report["forks"] = {key: mean([r["forks"][key] for r in runs]) for key in RATIO_KEYS} | {
            "per_seed": {key: [r["forks"][key] for r in runs] for key in RATIO_KEYS}}
    report["seeds"] = list(seeds)
    return report


def format_markdown(report: dict, title: str = "curves") -> str:
    def fmt(x, digits=3):
        return "–" if x is None else f"{x:.{digits}f}"

    seeds = report.get("seeds", [report["seed"]])
    lines = [f"## Simulated: {title} ({report['num_curves']} curves, seeds {seeds[0]}–{seeds[-1]})", ""]
    for name, r in (("adaptive (no token probabilities)", report), ("forks (sampler probabilities)", report.get("forks"))):
        if r and r.get("recall_ratio") is not None:
            spread = r.get("per_seed", {}).get("recall_ratio") or [r["recall_ratio"]]
            lines.append(f"- **{name}** vs exhaustive, traces ≥ {LONG_TRACE} tokens, mean over {len(spread)} seed(s): "
                         f"recall ratio **{fmt(r['recall_ratio'])}** (seeds {fmt(min(spread))}–{fmt(max(spread))}), "
                         f"false-cliffs ratio **{fmt(r['false_cliffs_ratio'])}** (ε = {FALSE_CLIFFS_EPS}), "
                         f"token ratio **{fmt(r['token_ratio'])}**")
    lines += ["", f"First seed, by group ({seeds[0]}):", "",
              "| traces | method | n | true cliffs | recall | false cliffs / trace | first-cliff agreement "
              "| rollouts / trace | tokens / trace |", "|---|---|---|---|---|---|---|---|---|"]
    for group, by_method in report["summary"].items():
        for m, s in by_method.items():
            lines.append(f"| {group} | {m} | {s['num_traces']} | {s['num_true_cliffs']} | {fmt(s['recall'])} "
                         f"| {fmt(s['false_cliffs_per_trace'], 2)} | {fmt(s['first_cliff_agreement'])} "
                         f"| {s['rollouts_per_trace']:,.0f} | {s['tokens_per_trace']:,.0f} |")
    return "\n".join(lines) + "\n"


def format_definitions() -> str:
    return "\n".join(["# Cliff search: exhaustive vs adaptive vs fork-aware vs PTS", ""]
                     + [f"- **{k.replace('_', ' ')}**: {v}" for k, v in DEFINITIONS.items()]) + "\n\n"
