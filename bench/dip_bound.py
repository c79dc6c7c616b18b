"""What any no-prior search must spend to find one-token dips: an oracle screen's recall/cost frontier.

    python bench/dip_bound.py [--samples 100000] [--seed 0]

Without token probabilities a one-token dip can sit at any position, so every position must be
screened with rollouts of its own. This bench gives the screen every advantage a real search lacks
and measures what it still costs, at the simulation's N = 64 and the pipeline's cliff test
(params.yaml `cliffs.test`, the same object `bench/adaptive.py` uses):

- the plateau level L of each position is known exactly (a real search estimates it);
- the distribution of dip depths is known exactly (the population's own);
- the rule is the likelihood-ratio screen on the position's own rollouts: draw a stage, keep the
  position open while E_depth[Binom(k | n, L − d)] / Binom(k | n, L) >= c, up to N; the dip's
  other side (the plateau) is drawn at N for the final test and not charged.

Populations: single dips that are true cliffs (the test fires at N = 64 on the expected counts), with
L and the depth uniform in the ranges below (`high`: the held-out `dips` kind of bench/adaptive.py;
`mid`: the `mid_dips` kind of its varied held-out library). Recall ratio = P(screen reaches N and the test fires) /
P(exhaustive's test fires), each with its own draws; cost = mean rollouts at a plateau (null) position
/ N, which is the token ratio of screening every position (dips are rare). Writes
bench/results/dip_bound.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from scipy.stats import binom

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cliffdata.cliffs.stats import is_cliff  # noqa: E402
from cliffdata.config.load import load_params  # noqa: E402

TEST = load_params(ROOT / "params.yaml").cliffs.test
N = 64
POPULATIONS = {"high": {"plateau": (0.8, 1.0), "depth": (0.25, 0.7)},
               "mid": {"plateau": (0.35, 0.8), "depth": (0.2, 0.5)}}
SCHEDULES = {"doubling 4-8-16-32-64": [4, 4, 8, 16, 32],
             "doubling 5-10-20-40-64": [5, 5, 10, 20, 24],
             "fine 2,3,...,8,10,12,16,24,32,64": [2, 1, 1, 1, 1, 1, 1, 2, 2, 4, 8, 8, 32],
             "fine 4,5,...,8,10,12,16,24,32,64": [4, 1, 1, 1, 1, 2, 2, 4, 8, 8, 32],
             "one at a time to 12, then 16,24,32,64": [2] + [1] * 10 + [4, 8, 8, 32]}
THRESHOLDS = (0.05, 0.07, 0.1, 0.12, 0.15, 0.2, 0.3)
DEPTH_GRID = 24


def population(name: str, samples: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(plateau, dip) potentials of single dips that are true cliffs at N = 64."""
    spec = POPULATIONS[name]
    level = rng.uniform(*spec["plateau"], samples)
    dip = np.maximum(level - rng.uniform(*spec["depth"], samples), 0.0)
    true = is_cliff(np.rint(N * level), N, np.rint(N * dip), N, TEST)
    return level[true], dip[true]


def likelihood_ratio(k: np.ndarray, n: int, level: np.ndarray, depth: tuple[float, float]) -> np.ndarray:
    """E over the depth prior of Binom(k | n, L − d), over Binom(k | n, L)."""
    d = np.linspace(depth[0], depth[1], DEPTH_GRID)
    alt = np.clip(level[:, None] - d[None, :], 0.0, 1.0)
    return binom.pmf(k[:, None], n, alt).mean(1) / np.maximum(binom.pmf(k, n, level), 1e-300)


def screen(level, dip, stages, c, depth, rng) -> tuple[float, float]:
    """(rollouts per null position / N, detected dips) of the LR screen with these stage sizes."""
    assert sum(stages) == N
    m = len(level)
    ns = np.cumsum(stages)
    at_dip = np.cumsum(np.stack([rng.binomial(s, dip) for s in stages], 1), 1)
    at_null = np.cumsum(np.stack([rng.binomial(s, level) for s in stages], 1), 1)
    open_dip, open_null, cost = np.ones(m, bool), np.ones(m, bool), np.zeros(m)
    for s in range(len(stages) - 1):
        cost += np.where(open_null, stages[s], 0)
        open_dip &= likelihood_ratio(at_dip[:, s], ns[s], level, depth) >= c
        open_null &= likelihood_ratio(at_null[:, s], ns[s], level, depth) >= c
    cost += np.where(open_null, stages[-1], 0)
    plateau = rng.binomial(N, level)
    fired = open_dip & is_cliff(plateau, N, at_dip[:, -1], N, TEST)
    return float(cost.mean() / N), float(fired.mean())


def run(samples: int, seed: int) -> dict:
    out = {"n": N, "cliffs": {"delta0": TEST.delta0, "z": TEST.z}, "samples": samples, "seed": seed, "populations": {}}
    for pname, spec in POPULATIONS.items():
        rng = np.random.default_rng([seed, list(POPULATIONS).index(pname)])
        level, dip = population(pname, samples, rng)
        exhaustive = float(is_cliff(rng.binomial(N, level), N, rng.binomial(N, dip), N, TEST).mean())
        rows = []
        for sname, stages in SCHEDULES.items():
            for c in THRESHOLDS:
                cost, fired = screen(level, dip, stages, c, spec["depth"], rng)
                rows.append({"schedule": sname, "threshold": c, "cost": round(cost, 4),
                             "recall_ratio": round(fired / exhaustive, 4)})
        ok = [r for r in rows if r["recall_ratio"] >= 0.95]
        cheap = [r for r in rows if r["cost"] <= 0.15]
        out["populations"][pname] = {
            **spec, "num_dips": len(level), "exhaustive_detection": round(exhaustive, 4), "screens": rows,
            "min_cost_at_recall_0.95": min(ok, key=lambda r: r["cost"]) if ok else None,
            "max_recall_at_cost_0.15": max(cheap, key=lambda r: r["recall_ratio"]) if cheap else None}
    return out


def markdown(report: dict) -> str:
    lines = ["# One-token dips: the oracle screen's recall / cost frontier (bench/dip_bound.py)", "",
             f"N = {report['n']}, cliff test δ0 = {report['cliffs']['delta0']}, z = {report['cliffs']['z']}; "
             "level and depth prior known exactly; cost = rollouts at a plateau position / N (the token ratio "
             "of screening every position); recall ratio against exhaustive's detection of the same dips.", ""]
    for pname, p in report["populations"].items():
        best, cheap = p["min_cost_at_recall_0.95"], p["max_recall_at_cost_0.15"]
        lines += [f"## {pname}: plateau {p['plateau']}, depth {p['depth']} ({p['num_dips']:,} dips; "
                  f"exhaustive detects {p['exhaustive_detection']:.3f})", "",
                  f"- cheapest screen with recall ratio >= 0.95: "
                  + (f"**cost {best['cost']:.3f}** ({best['schedule']}, c = {best['threshold']})" if best else "none"),
                  f"- best recall ratio at cost <= 0.15: "
                  + (f"**{cheap['recall_ratio']:.3f}** ({cheap['schedule']}, c = {cheap['threshold']})" if cheap else "none"),
                  "", "| schedule | c | cost | recall ratio |", "|---|---|---|---|"]
        lines += [f"| {r['schedule']} | {r['threshold']} | {r['cost']:.3f} | {r['recall_ratio']:.3f} |" for r in p["screens"]]
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=40_000, help="dips drawn per population (before keeping true cliffs)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=ROOT / "bench/results/dip_bound.json")
    args = ap.parse_args(argv)
    report = run(args.samples, args.seed)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1) + "\n")
    args.json.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
