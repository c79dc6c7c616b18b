"""A rollout gate by cliff risk, replayed on a run's own rollouts: how many of the fork search's replicated
cliffs would a search keep if it spent rollouts only on the riskiest tested pairs, and at what share of an
exhaustive search's tokens?

    python bench/risk_gate.py --root . --name embedded [--json bench/results/risk_gate_embedded.json]

Reads data/risk_labels (the tested pairs, their verdicts, `replicated` and features), data/rollouts/
potentials.parquet (the tokens each evaluated position cost) and metrics/rollouts.json (the estimate of an
exhaustive search's tokens on the same traces) under --root, and the `risk` section of its params.yaml.

Each pair's risk is out of fold: the logistic model of the `risk` stage (its features and inverse_l2) fit on
the feasible pairs of the other problem folds (`risk.folds`, `risk.seed`), so no problem scores itself.
Beside it, single features order the pairs (max_drop = 1 − π_s, entropy) and so does a seeded random
order. A gate keeping the top share b of the tested pairs by an order spends the tokens of the positions
those pairs need (both sides; a position shared by two kept pairs counts once) and finds the cliffs among
them. Recall is over the run's replicated cliffs (the replicate stage's fresh test, with a Wilson interval)
and over all its cliffs; tokens are a share of the exhaustive estimate, without and with the tokens the run
spent screening forks that never reached a test (which the labels do not hold). At b = 1 with the
screening the gate is the fork search as it ran.

This is a replay: a gated search would stop screening a dropped pair at once, and a kept pair costs what it
cost here. Writes the JSON and a Markdown table beside it, and prints the table.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pyarrow.compute as pc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cliffdata import schema  # noqa: E402
from cliffdata.cliffs.stats import wilson_interval  # noqa: E402
from cliffdata.config.load import load_params  # noqa: E402
from cliffdata.risk.model import feature_matrix, fit_logistic, out_of_fold, problem_folds  # noqa: E402

SHARES = (0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0)


def orders(labels, cfg, seed: int) -> dict[str, np.ndarray]:
    """Per ordering, a score per tested pair (higher: kept first)."""
    y, _ = cliff_masks(labels)
    X = feature_matrix(labels, cfg.features)
    known = ~np.isnan(X).any(axis=1)
    feasible = np.asarray(pc.fill_null(labels["feasible"], False).to_numpy(zero_copy_only=False), dtype=bool)
    fold, num_folds = problem_folds(labels["problem_id"].to_pylist(), cfg.folds, cfg.seed)
    train = feasible & known
    logistic = np.zeros(len(y))
    if num_folds >= 2:
        # out of fold: each fold scored by the model of the others' feasible pairs
        risk = out_of_fold(lambda a, b: fit_logistic(a, b, cfg.features, cfg.inverse_l2),
                           np.where(np.isnan(X), 0.0, X)[train], y[train], fold[train])
        logistic[train] = risk
    rng = np.random.default_rng(seed)
    return {"logistic (out of fold)": logistic,
            "max_drop": np.nan_to_num(feature_matrix(labels, ["max_drop"])[:, 0], nan=1.0),
            "entropy": np.nan_to_num(feature_matrix(labels, ["entropy"])[:, 0], nan=0.0),
            "random": rng.random(len(y))}


def cliff_masks(labels) -> tuple[np.ndarray, np.ndarray]:
    """(is a cliff, is a replicated cliff) per tested pair."""
    cliff = np.asarray(labels["is_cliff"].to_numpy(zero_copy_only=False), dtype=bool)
    replicated = np.asarray(pc.fill_null(labels["replicated"], False).to_numpy(zero_copy_only=False), dtype=bool)
    return cliff, replicated & cliff


def replay(labels, tokens: dict[tuple[str, int], int], score: np.ndarray, shares, exhaustive: int,
           screening: int) -> list[dict]:
    """Recall (with its 95% Wilson interval over the replicated cliffs) and tokens of the gate that keeps
    the top `share` of the pairs by `score` (ties by key). `screening`: the run's tokens on positions of no
    tested pair (forks the search dropped before the test): a gate ordered before screening spends between
    none of them and all of them, so the token ratio comes as that range."""
    trace = labels["trace_id"].to_pylist()
    index = labels["token_index"].to_pylist()
    cliff, replicated = cliff_masks(labels)
    order = sorted(range(len(trace)), key=lambda j: (-score[j], trace[j], index[j]))
    rows = []
    for share in shares:
        kept = order[:int(round(share * len(order)))]
        positions = {(trace[j], i) for j in kept for i in (index[j] - 1, index[j])}
        spent = sum(tokens.get(p, 0) for p in positions)
        found = np.zeros(len(trace), dtype=bool)
        found[kept] = True
        hits, total = int((found & replicated).sum()), int(replicated.sum())
        lo, hi = wilson_interval(hits, total) if total else (None, None)
        rows.append({"share_of_pairs": share, "num_pairs": len(kept), "tokens": spent,
                     "token_ratio": round(spent / exhaustive, 4) if exhaustive else None,
                     "token_ratio_with_screening": round((spent + screening) / exhaustive, 4) if exhaustive else None,
                     "recall_replicated": round(hits / max(total, 1), 4),
                     "recall_replicated_interval": [None if lo is None else round(lo, 4),
                                                    None if hi is None else round(hi, 4)],
                     "recall_cliffs": round(float((found & cliff).sum() / max(cliff.sum(), 1)), 4)})
    return rows


def at_ratio(rows: list[dict], ratio: float) -> dict | None:
    """The row with the most tokens within `ratio` of exhaustive's."""
    within = [r for r in rows if r["token_ratio"] is not None and r["token_ratio"] <= ratio]
    return max(within, key=lambda r: r["tokens"]) if within else None


def markdown(report: dict) -> str:
    lines = [f"# Rollout gate by cliff risk, replayed: {report['name']}", "",
             f"{report['num_pairs']} tested pairs in {report['num_traces']} traces, {report['num_cliffs']} cliffs, "
             f"{report['num_replicated']} replicated; exhaustive estimate {report['exhaustive_tokens']:,} tokens, "
             f"the fork search as run {report['fork_search_tokens']:,} ({report['fork_search_ratio']}×).", "",
             f"Tokens of the tested pairs' positions: {report['tested_tokens']:,}; of forks screened out before "
             f"any test: {report['screening_tokens']:,}, which a gate spends between none and all of.", "",
             "| order | share of pairs | tokens / exhaustive (+ all screening) | recall, replicated [95%] | "
             "recall, all cliffs |", "|---|---|---|---|---|"]
    for name, rows in report["orders"].items():
        for r in rows:
            lo, hi = r["recall_replicated_interval"]
            lines.append(f"| {name} | {r['share_of_pairs']:g} | {r['token_ratio']} ({r['token_ratio_with_screening']}) "
                         f"| {r['recall_replicated']} [{lo}, {hi}] | {r['recall_cliffs']} |")
    lines += ["", "At ≤ 0.05× exhaustive's tokens (the tested pairs' positions only):", ""]
    for name, r in report["at_0.05"].items():
        lines.append(f"- {name}: " + ("no share fits" if r is None else
                     f"recall of replicated cliffs {r['recall_replicated']} at {r['token_ratio']}× "
                     f"(top {r['share_of_pairs']:g} of pairs)"))
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=Path("."))
    ap.add_argument("--name", required=True, help="the run's name in the report (e.g. embedded, decisive)")
    ap.add_argument("--seed", type=int, default=0, help="the random order's draw")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    cfg = load_params(args.root / "params.yaml").risk
    labels = schema.read("risk_labels", args.root / schema.PATHS["risk_labels"])
    pots = schema.read("potentials", args.root / schema.PATHS["potentials"])
    tokens = {(t, i): n for t, i, n in zip(*(pots[c].to_pylist() for c in ("trace_id", "token_index",
                                                                              "num_generated_tokens")))}
    rollouts = json.loads((args.root / "metrics/rollouts.json").read_text())
    exhaustive = int(rollouts["estimated_generated_tokens"])
    cliff, replicated = cliff_masks(labels)
    report = {"name": args.name, "num_pairs": labels.num_rows, "num_traces": len(set(labels["trace_id"].to_pylist())),
              "num_cliffs": int(cliff.sum()), "num_replicated": int(replicated.sum()),
              "exhaustive_tokens": exhaustive, "fork_search_tokens": int(rollouts["num_generated_tokens"]),
              "fork_search_ratio": rollouts["estimate_ratio"], "features": list(cfg.features),
              "folds": cfg.folds, "orders": {}}
    tested = {(t, i + d) for t, i in zip(labels["trace_id"].to_pylist(), labels["token_index"].to_pylist())
              for d in (-1, 0)}
    report["tested_tokens"] = sum(tokens.get(p, 0) for p in tested)
    report["screening_tokens"] = sum(n for p, n in tokens.items() if p not in tested)
    for name, score in orders(labels, cfg, args.seed).items():
        report["orders"][name] = replay(labels, tokens, score, SHARES, exhaustive, report["screening_tokens"])
    report["at_0.05"] = {name: at_ratio(rows, 0.05) for name, rows in report["orders"].items()}
    out = args.json or Path(f"bench/results/risk_gate_{args.name}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    text = markdown(report)
    out.with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
