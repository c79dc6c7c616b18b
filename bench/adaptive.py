"""Adaptive vs exhaustive vs PTS-style bisection cliff search, on simulated potential curves.

    python bench/adaptive.py --sim-only [--seed 0] [--num-curves 126] [--curves PATH] [--json bench/results/adaptive.json]

    python bench/adaptive.py --frontier [--curves PATH]    # recall / tokens over rollouts.adaptive's screen knobs

Writes the JSON report and a Markdown table next to it (`adaptive.md`), and prints the table;
`--frontier` writes `<--json stem>_frontier.{json,md}` instead.

Simulation (cliffdata/search/simulate.py). Each ground-truth potential curve p (one value per response
token, T tokens) is searched by every method through a binomial rollout oracle: a request (i, n) returns
Binomial(n, p[i]) correct rollouts and charges n·(T − 1 − i) generated tokens (each rollout regenerates
the rest of the trace). The curves are the seeded libraries of cliffdata/search/curves.py (the tuning one:
kinds in `KINDS`, lengths 50–2,000, most ≥ 200) or the user's (`--curves`: a JSON list of
{"kind": str, "p": [float, ...]}). Methods:

- exhaustive: every position with N = 64 rollouts (paper mode), cliffs by the protocol test (§2);
- adaptive: `cliffdata.search.adaptive.adaptive_search` with the pipeline's `rollouts.adaptive` and `cliffs.test`
  params (params.yaml, the same objects the `rollouts` stage passes) at N = 64; cliffs by the
  protocol test between adjacent evaluated positions, each side with its own N;
- pts: pivotal-token-search-style bisection (cliffdata/search/pts.py; Phi-4, Abdin et al. 2024, arXiv 2412.08905): N = 20 at
  both ends, bisect every interval with |Δp̂| ≥ 0.2 until its ends are adjacent; adjacent pairs with
  p̂[i−1] − p̂[i] ≥ 0.2 are its cliffs.

Definitions (repeated in the Markdown output):
- True cliff: position i with is_cliff(round(64·p[i−1]), 64, round(64·p[i]), 64), i.e. the protocol
  test would fire at N = 64 on the expected counts: a true drop that exhaustive mode can detect.
- Recall: detected true cliffs / true cliffs, pooled over traces.
- False cliffs per trace: reported cliffs that are not true cliffs, divided by the number of traces.
- First-cliff agreement: share of traces whose first reported cliff is the first true cliff (no cliff
  reported where there is none counts as agreement).

Top-level JSON keys, over the traces of length ≥ 200 (of `heldout_model_like`, the library never tuned on,
without --curves; each library's own under `libraries`): `recall_ratio` = adaptive / exhaustive recall;
`false_cliffs_ratio` = (adaptive + ε) / (exhaustive + ε) false cliffs per trace with ε = 0.01, since
exhaustive can have none (raw values in `false_cliffs_per_trace`); `token_ratio` = adaptive /
exhaustive generated tokens. Deterministic for a seed: the curve library and every (curve, method)
oracle draw from their own seeded generators.
"""
from __future__ import annotations
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cliffdata.config.load import load_params  # noqa: E402
from cliffdata.search.base import Evaluated, cliffs_from_evaluated  # noqa: E402
from cliffdata.search.curves import (load_curves, make_curves, make_heldout_curves, make_identity_curves,  # noqa: E402
                                     make_model_like_curves, make_varied_curves)
from cliffdata.search.pts import evaluated_only, pts_cliffs, pts_steps  # noqa: E402
from cliffdata.search.simulate import (EXHAUSTIVE_N, LONG_TRACE, RATIO_KEYS, SearchSettings,  # noqa: E402
                                       format_definitions, format_markdown, ratios, run_seeds, run_sim)

# The searches and the cliff test exactly as the pipeline runs them: params.yaml's objects.
PARAMS = load_params(ROOT / "params.yaml")
SETTINGS = SearchSettings.from_params(PARAMS)
TEST = SETTINGS.test


# ---------------------------------------------------------------------------------------------
# Real model: exhaustive vs adaptive on the pipeline's traces, with a second exhaustive run as the
# noise ceiling. The reference exhaustive run is a rollout dataset (default: the pipeline's own
# data/rollouts/potentials.parquet, mode exhaustive); the bench draws the other two.

def _evaluated_by_trace(rows: list[dict]) -> dict[str, Evaluated]:
    by_trace: dict[str, Evaluated] = {}
    for r in rows:
        if not r["is_filled"]:
            by_trace.setdefault(r["trace_id"], {})[r["token_index"]] = (
                r["num_rollouts"], r["num_correct"], r["num_generated_tokens"])
    return by_trace


def _cliff_sets(rows: list[dict]) -> dict[str, list[int]]:
    return {t: cliffs_from_evaluated(ev, TEST) for t, ev in _evaluated_by_trace(rows).items()}


def compare_runs(reference: dict[str, list[int]], other: dict[str, list[int]]) -> dict:
    """First-cliff agreement, all-cliff recall and precision of `other` relative to `reference`."""
    traces = sorted(reference)
    first_agree = sum((reference[t][:1] or [None]) == (other.get(t, [])[:1] or [None]) for t in traces)
    ref_all = {(t, i) for t in traces for i in reference[t]}
    oth_all = {(t, i) for t in traces for i in other.get(t, [])}
    hit = len(ref_all & oth_all)
    return {"num_traces": len(traces), "first_cliff_agreement": first_agree / max(len(traces), 1),
            "recall": hit / len(ref_all) if ref_all else None,
            "precision": hit / len(oth_all) if oth_all else None,
            "num_cliffs_reference": len(ref_all), "num_cliffs": len(oth_all)}


def run_real(potentials_path: str, max_traces: int | None, seed: int) -> dict:
    """Exhaustive (the given dataset) vs a second exhaustive seed vs adaptive vs forks: same N, same
    engine, the pipeline's params and scheduler (`search_wave` over waves of `rollouts.traces_per_wave`)."""
    from transformers import AutoTokenizer

    from cliffdata import schema
    from cliffdata.backends import open_backend
    from cliffdata.generate.sampling import golds_by_problem
    from cliffdata.search.rollouts import max_drops_of, scored_positions, search_wave, waves

    reference_rows = schema.read("potentials", potentials_path).to_pylist()
    modes = {r["mode"] for r in reference_rows}
    if modes != {"exhaustive"}:
        raise ValueError(f"{potentials_path}: the reference must be an exhaustive run, got modes {sorted(modes)}")
    n_ref = {r["num_rollouts"] for r in reference_rows if not r["is_filled"]}
    if len(n_ref) != 1:
        raise ValueError(f"{potentials_path}: the reference must use one N, got {sorted(n_ref)}")
    (n,) = n_ref
    traces = schema.read("traces", ROOT / schema.PATHS["traces"]).to_pylist()
    wanted = sorted({r["trace_id"] for r in reference_rows})
    if max_traces and max_traces < len(wanted):     # an even spread over the dataset, not its first family
        wanted = [wanted[round(j * len(wanted) / max_traces)] for j in range(max_traces)]
    traces = [t for t in traces if t["trace_id"] in set(wanted)]
    golds = golds_by_problem(schema.read("problems", ROOT / schema.PATHS["problems"]).to_pylist())
    max_drops = max_drops_of(ROOT / schema.PATHS["token_stats"], set(wanted))
    base = dataclasses.replace(PARAMS.rollouts, num_rollouts=n)
    configs = {"exhaustive_seed2": dataclasses.replace(base, mode="exhaustive", seed=seed + 1000),
               "adaptive": dataclasses.replace(base, mode="adaptive", seed=seed + 2000),
               "forks": dataclasses.replace(base, mode="forks", seed=seed + 3000),
               # PTS through the same scheduler (its own searches; seeds per position and round)
               "pts": dataclasses.replace(base, mode="adaptive", seed=seed + 4000)}
    tokenizer = AutoTokenizer.from_pretrained(ROOT / "models/base")
    rows: dict[str, list[dict]] = {name: [] for name in configs}
    seconds: dict[str, float] = {}
    with open_backend(PARAMS.engine, str(ROOT / "models/base"), seed=seed) as backend:
        for name, cfg in configs.items():
            started = time.perf_counter()
            for wave in waves(traces, cfg):
                searches = ([evaluated_only(pts_steps(scored_positions(len(t["response_ids"]), cfg.score_empty_prefix)))
                             for t in wave] if name == "pts" else None)
                for r, _ in search_wave(wave, golds, backend, tokenizer, cfg, cfg.sampling, TEST, max_drops, searches):
                    rows[name] += r
            seconds[name] = round(time.perf_counter() - started, 1)
    reference_rows = [r for r in reference_rows if r["trace_id"] in set(wanted)]
    ref = _cliff_sets(reference_rows)
    tokens = {"exhaustive": sum(r["num_generated_tokens"] for r in reference_rows)}
    report = {"reference": str(potentials_path), "num_rollouts": n, "num_traces": len(traces),
              "engine": PARAMS.engine.backend, "wall_seconds": seconds, "methods": {}}
    for name, r in rows.items():
        tokens[name] = sum(x["num_generated_tokens"] for x in r)
        found = _cliff_sets(r) if name != "pts" else {
            t: pts_cliffs(ev) for t, ev in _evaluated_by_trace(r).items()}
        report["methods"][name] = {**compare_runs(ref, found),
                                   "generated_tokens": tokens[name],
                                   "token_ratio": tokens[name] / max(tokens["exhaustive"], 1),
                                   "wall_seconds": seconds[name],
                                   "wall_ratio": seconds[name] / max(seconds["exhaustive_seed2"], 1e-9)}
    report["methods"]["exhaustive"] = {"generated_tokens": tokens["exhaustive"], "num_cliffs": sum(map(len, ref.values()))}
    return report


def format_real(real: dict) -> str:
    lines = [f"\n## Real model ({real['engine']}, {real['num_traces']} traces, N = {real['num_rollouts']}, "
             f"reference {real['reference']}; the second exhaustive seed is the noise ceiling)\n",
             "| run | first-cliff agreement | recall | precision | cliffs | generated tokens | token ratio "
             "| wall s | wall ratio (to exhaustive_seed2) |", "|---|---|---|---|---|---|---|---|---|"]
    ex = real["methods"]["exhaustive"]
    lines.append(f"| exhaustive (reference) | 1.000 | 1.000 | 1.000 | {ex['num_cliffs']} | {ex['generated_tokens']:,} "
                 f"| 1.000 | – | – |")
    fmt = lambda x: "–" if x is None else f"{x:.3f}"
    for name in ("exhaustive_seed2", "adaptive", "forks", "pts"):
        m = real["methods"][name]
        lines.append(f"| {name} | {fmt(m['first_cliff_agreement'])} | {fmt(m['recall'])} | {fmt(m['precision'])} "
                     f"| {m['num_cliffs']} | {m['generated_tokens']:,} | {m['token_ratio']:.3f} "
                     f"| {m['wall_seconds']:.1f} | {m['wall_ratio']:.3f} |")
    return "\n".join(lines) + "\n"


def export_curves(potentials_path: str | Path, out: str | Path) -> int:
    """Real curves for `--curves`: every trace of an exhaustive potentials dataset (filled positions
    at 0), with its tokens' sampler probabilities from the pipeline's token_stats."""
    from cliffdata import schema
    from cliffdata.scan import read_columns

    rows = schema.read("potentials", potentials_path).to_pylist()
    stats = read_columns(ROOT / schema.PATHS["token_stats"], ["trace_id", "token_index", "sampler_prob"]).to_pylist()
    prob = {(s["trace_id"], s["token_index"]): s["sampler_prob"] for s in stats}
    by_trace: dict[str, dict[int, float]] = {}
    for r in rows:
        if r["token_index"] >= 0:
            by_trace.setdefault(r["trace_id"], {})[r["token_index"]] = r["potential"]
    curves = []
    for t, p in sorted(by_trace.items()):
        idx = sorted(p)
        sp = [prob.get((t, i)) for i in idx]
        curve = {"kind": "embedded_exhaustive", "p": [p[i] for i in idx]}
        if all(x is not None for x in sp):
            curve["sampler_prob"] = sp
        if len(idx) >= 2:
            curves.append(curve)
    Path(out).write_text(json.dumps(curves))
    return len(curves)



# --- the no-prior search's recall / token frontier --------------------------------------------------

# (sweep_rollouts, flag_lr) settings of rollouts.adaptive, the rest from params.yaml: the cheapest screen
# (6, 0.2: the setting of the real-model arms in bench/results/adaptive.json) first, the params' own among them
FRONTIER = ((6, 0.2), (8, 0.1), (12, 0.05), (12, 0.03), (6, 0.02), (16, 0.03))


def run_frontier(libraries: dict[str, Callable[[int], list[dict]]], seeds: Sequence[int],
                 settings: Sequence[tuple[int, float]] = FRONTIER) -> dict:
    """Adaptive vs exhaustive on every library under each (sweep_rollouts, flag_lr): the mean ratios over
    the seeds, traces >= 200 tokens (a library without such traces: all its traces)."""
    params_config, out = SETTINGS.adaptive, []
    for sweep, flag_lr in settings:
        varied = dataclasses.replace(SETTINGS, adaptive=dataclasses.replace(params_config, sweep_rollouts=sweep,
                                                                             flag_lr=flag_lr))
        row = {"sweep_rollouts": sweep, "flag_lr": flag_lr, "params": varied.adaptive == params_config,
               "libraries": {}}
        for name, curves_of in libraries.items():
            per_seed = []
            for s in seeds:
                summary = run_sim(curves_of(s), s, varied, ("exhaustive", "adaptive"))["summary"]
                per_seed.append(ratios(summary.get(f"length>={LONG_TRACE}") or summary["all"], "adaptive"))
            row["libraries"][name] = {key: round(float(np.mean([r[key] for r in per_seed if r[key] is not None])), 4)
                                      for key in RATIO_KEYS}
        out.append(row)
    return {"seeds": list(seeds), "settings": out}


def format_frontier(frontier: dict) -> str:
    names = list(frontier["settings"][0]["libraries"])
    lines = ["# The no-prior search's frontier: recall ratio / token ratio against exhaustive", "",
             f"Means over seeds {frontier['seeds'][0]}–{frontier['seeds'][-1]}, N = {EXHAUSTIVE_N}, traces ≥ "
             f"{LONG_TRACE} tokens (all traces where a library has none); `rollouts.adaptive` as in params.yaml "
             "but for the two columns varied (bold: params.yaml's own).", "",
             "| sweep_rollouts | flag_lr | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for row in frontier["settings"]:
        b = "**" if row["params"] else ""
        cells = [f"{b}{r['recall_ratio']:.3f} / {r['token_ratio']:.3f}{b}" for r in row["libraries"].values()]
        lines.append(f"| {b}{row['sweep_rollouts']}{b} | {b}{row['flag_lr']}{b} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=0, help="first seed")
    ap.add_argument("--seeds", type=int, default=10, help="how many seeds (from --seed); ratios are means over them")
    ap.add_argument("--num-curves", type=int, default=126, help="size of the tuning and held-out libraries, a third "
                    "of it for the identity library (ignored with --curves)")
    ap.add_argument("--curves", type=Path, default=None,
                    help='JSON list of {"kind": str, "p": [float, ...]} to use instead of the library')
    ap.add_argument("--sim-only", action="store_true", help="only the simulated comparison (seconds)")
    ap.add_argument("--potentials", type=Path, default=ROOT / "data/rollouts/potentials.parquet",
                    help="the exhaustive rollout dataset that is the real-model reference")
    ap.add_argument("--max-traces", type=int, default=None, help="real model: this many traces, evenly spread over the reference")
    ap.add_argument("--json", type=Path, default=ROOT / "bench/results/adaptive.json")
    ap.add_argument("--frontier", action="store_true",
                    help="the no-prior search's recall / token frontier: rollouts.adaptive under each FRONTIER setting on "
                         "every library (or --curves), adaptive and exhaustive only; writes <--json stem>_frontier.{json,md} "
                         "beside --json")
    ap.add_argument("--export-curves", type=Path, default=None,
                    help="write the --potentials reference as a --curves file (with token_stats sampler probabilities) and exit")
    args = ap.parse_args(argv)
    if args.export_curves:
        print(f"{export_curves(args.potentials, args.export_curves)} curves -> {args.export_curves}")
        return
    try:
        curves = load_curves(args.curves) if args.curves else make_curves(args.num_curves, args.seed, TEST)
    except ValueError as e:
        ap.error(str(e))

    started = time.perf_counter()
    seeds = list(range(args.seed, args.seed + args.seeds))
    # tuning: the library the adaptive search was designed on; heldout, heldout_varied: written apart from
    # it (rollouts.adaptive's screen knobs were chosen on these three and the embedded real curves);
    # heldout_model_like: written apart from all three and never tuned on, the top-level ratios' library;
    # identity: curves with sampler probabilities (the fork-aware search's setting)
    libraries = {"tuning": lambda s: make_curves(args.num_curves, s, TEST),
                 "heldout": lambda s: make_heldout_curves(args.num_curves, s),
                 "heldout_varied": lambda s: make_varied_curves(args.num_curves, s),
                 "heldout_model_like": lambda s: make_model_like_curves(args.num_curves, s, TEST),
                 "identity": lambda s: make_identity_curves(max(args.num_curves // 3, 1), s, TEST)}
    if args.frontier:
        frontier = run_frontier({str(args.curves): lambda s: curves} if args.curves else libraries, seeds)
        out = args.json.with_name(f"{args.json.stem}_frontier.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(frontier, indent=1) + "\n")
        out.with_suffix(".md").write_text(format_frontier(frontier))
        print(format_frontier(frontier))
        print(f"frontier: {time.perf_counter() - started:.1f} s", file=sys.stderr)
        return
    if args.curves:
        report = run_seeds(lambda s: curves, seeds, SETTINGS)
        markdown = format_definitions() + format_markdown(report, str(args.curves))
    else:
        runs = {name: run_seeds(of, seeds, SETTINGS) for name, of in libraries.items()}
        report = {key: runs["heldout_model_like"][key] for key in RATIO_KEYS} | {
            "forks": runs["identity"]["forks"], "seeds": seeds,
            "libraries": {name: {k: v for k, v in r.items() if k != "traces"} for name, r in runs.items()}}
        markdown = format_definitions() + "".join(format_markdown(r, name) + "\n" for name, r in runs.items())
    print(f"simulation: {time.perf_counter() - started:.1f} s", file=sys.stderr)
    if not args.sim_only:
        report["real"] = run_real(str(args.potentials), args.max_traces, args.seed)
        markdown += format_real(report["real"])
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    args.json.with_suffix(".md").write_text(markdown)
    print(markdown)


if __name__ == "__main__":
    main()
