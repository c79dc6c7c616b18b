"""The analysis at 10^6-10^8 potential rows: the cliffs stage and every table over a seeded synthetic study.

    python bench/scale.py --rows 1000000 10000000 100000000 [--seed 0] [--work /tmp/cliffdata-scale]
    python bench/scale.py --rows 1600000 --merge      # add a size to bench/results/scale.{json,md}

Each size is a synthetic study (`cliffdata.analysis.synthetic.write_study`: traces, token_stats and potentials
in the pipeline's layout, generated once under `--work` and reused; not timed), analysed in a fresh
interpreter with the pipeline's own params (params.yaml: `cliffs`, `entropy`, `analysis`), step by
step, as the stages run them:

- cliffs: `cliff_tables` over the Parquet files (`analysis.threads` scan workers) and the writes of
  data/cliffs (the `cliffs` stage); checks: the stage's SQL checks; occurrence_taxonomy: the stage's
  metrics tables (DuckDB); entropy: the `entropy` stage's two tables;
- sql_by_category, sql_curve, sql_ranks: three typical `cliffdata sql` queries (the sandboxed
  connection and read-only runner the command uses): cliffs by dataset and category; the mean
  potential by decile of relative position (all potentials joined to traces); tokens by rank (all
  token_stats).

Per step: wall seconds and the peak resident memory of the whole process tree (the interpreter and
its scan workers, sampled every 10 ms). Imports happen before the clock starts: a cold `python
pipeline/cliffs.py` adds about a second of them. Writes bench/results/scale.{json,md}: `runs`, one
object per size with `rows`, `wall_seconds` (all steps), `peak_rss_bytes` and `steps`.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

QUERIES = {
    "sql_by_category": "select split_part(problem_id, '/', 1) as dataset, category, count(*) as cliffs, "
                       "avg(delta) as mean_drop from cliffs group by all order by all",
    "sql_curve": "select floor(10 * p.token_index / t.num_tokens) as decile, avg(p.potential) as mean_potential, "
                 "count(*) as positions from potentials as p join traces as t using (trace_id) "
                 "where p.token_index >= 0 group by decile order by decile",
    "sql_ranks": "select rank, count(*) as tokens, avg(max_drop) as mean_max_drop from token_stats "
                 "group by rank order by rank",
}


class TreeMemory:
    """Peak RSS of this process and its children, sampled in a thread."""

    def __init__(self, interval: float = 0.01):
        import psutil

        self._proc = psutil.Process()
        self._interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> int:
        import psutil

        total = 0
        for p in [self._proc, *self._proc.children(recursive=True)]:
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._sample())
            time.sleep(self._interval)

    def __enter__(self) -> TreeMemory:
        self.peak = self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._sample())


def analyse(study: Path) -> dict:
    """The timed steps over one study (run in a fresh interpreter: `--analyse`)."""
    from cliffdata import schema
    from cliffdata.analysis import duck, sandbox
    from cliffdata.cliffs.find import SCAN_VERIFIED, cliff_tables
    from cliffdata.cliffs.taxonomy import sql_params
    from cliffdata.config.load import load_params

    import pyarrow as pa

    pa.array([0])                   # pyarrow imports pandas on its first conversion (0.25 s): an import
    params = load_params(ROOT / "params.yaml")
    cfg = params.cliffs
    taxonomy = sql_params(cfg)

    def cliffs():
        found, summaries = cliff_tables(*(study / schema.PATHS[n] for n in ("traces", "potentials", "token_stats")),
                                        cfg, workers=params.analysis.threads)
        schema.write("cliffs", found, study / schema.PATHS["cliffs"])
        schema.write("trace_cliffs", summaries, study / schema.PATHS["trace_cliffs"])
        return {"cliffs": found.num_rows, "traces": summaries.num_rows}

    def checks():
        names = ["traces", "token_stats", "potentials", "cliffs", "trace_cliffs"]
        with duck.connect(study, names, params.analysis) as con:
            return {"checks": len(duck.assert_checks(con, skip=SCAN_VERIFIED))}

    def occurrence_taxonomy():
        out = duck.write_metrics(study, taxonomy, params.analysis)
        return {"cliffs_per_trace": out["occurrence"]["all"]["cliffs_per_trace"]}

    def entropy():
        with duck.connect(study, ["cliffs", "trace_cliffs", "token_stats"], params.analysis) as con:
            rank = duck.run_sql_file(con, "entropy_rank", taxonomy)
            hist = duck.run_sql_file(con, "entropy_hist", {"include_empty_prefix": taxonomy["include_empty_prefix"],
                                                           "use_full_entropy": taxonomy["use_full_entropy"],
                                                           "num_bins": params.entropy.bins,
                                                           "max_entropy": params.entropy.max_entropy})
        return {"rows": rank.num_rows + hist.num_rows}

    def query(sql):
        def run():
            with sandbox.connect_sandbox(study, params.analysis) as con:
                (columns, rows), = sandbox.readonly_results(con, sql)
            return {"rows": len(rows)}
        return run

    steps = {"cliffs": cliffs, "checks": checks, "occurrence_taxonomy": occurrence_taxonomy, "entropy": entropy,
             **{name: query(sql) for name, sql in QUERIES.items()}}
    out = {}
    for name, step in steps.items():
        with TreeMemory() as memory:
            started = time.perf_counter()
            result = step()
            wall = time.perf_counter() - started
        out[name] = {"wall_seconds": round(wall, 3), "peak_rss_bytes": memory.peak, **result}
        print(f"  {name:<20} {wall:7.2f} s  {memory.peak / 2**30:5.2f} GiB", file=sys.stderr, flush=True)
    return out


def study_for(work: Path, rows: int, seed: int) -> tuple[Path, dict]:
    """The synthetic study of `rows` potential rows (generated once, reused after)."""
    from cliffdata.analysis.synthetic import write_study

    folder = work / f"rows{rows}-seed{seed}"
    marker = folder / "study.json"
    if marker.exists():
        return folder, json.loads(marker.read_text())
    started = time.perf_counter()
    sizes = write_study(folder, rows=rows, seed=seed)
    sizes["generate_seconds"] = round(time.perf_counter() - started, 1)
    sizes["disk_bytes"] = sum(p.stat().st_size for p in folder.rglob("*.parquet"))
    marker.write_text(json.dumps(sizes))
    return folder, sizes


def markdown(result: dict) -> str:
    steps = list(result["runs"][0]["steps"]) if result["runs"] else []
    lines = ["# Analysis at scale (bench/scale.py)", "",
             f"{result['machine']}; params.yaml `analysis`: {result['analysis']}; seed {result['seed']}. "
             "Wall seconds per step, peak RSS of the process tree; imports not timed.", "",
             "| rows | traces | cliffs | " + " | ".join(steps) + " | all steps | peak RSS |",
             "|---:|---:|---:|" + "---:|" * len(steps) + "---:|---:|"]
    for run in result["runs"]:
        cells = [f"{run['steps'][s]['wall_seconds']:.2f}" for s in steps]
        lines.append(f"| {run['rows']:,} | {run['study']['traces']:,} | {run['steps']['cliffs']['cliffs']:,} | "
                     + " | ".join(cells) + f" | **{run['wall_seconds']:.2f}** | {run['peak_rss_bytes'] / 2**30:.2f} GiB |")
    lines += ["", "Peak RSS per step (GiB): " + "; ".join(
        f"{run['rows']:,}: " + ", ".join(f"{s} {run['steps'][s]['peak_rss_bytes'] / 2**30:.2f}" for s in steps)
        for run in result["runs"])]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, nargs="+", default=[10**6, 10**7])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "cliffdata-scale",
                    help="where the synthetic studies are generated (reused across runs)")
    ap.add_argument("--json", type=Path, default=ROOT / "bench/results/scale.json")
    ap.add_argument("--merge", action="store_true", help="keep the sizes already in --json that this run does not redo")
    ap.add_argument("--analyse", type=Path, help=argparse.SUPPRESS)     # the child: time the steps of one study
    args = ap.parse_args()
    if args.analyse:
        print(json.dumps(analyse(args.analyse)))
        return

    from cliffdata.config.load import load_params

    runs = []
    for rows in args.rows:
        study, sizes = study_for(args.work, rows, args.seed)
        print(f"{rows:,} potential rows ({sizes['traces']:,} traces) under {study}", file=sys.stderr, flush=True)
        child = subprocess.run([sys.executable, __file__, "--analyse", str(study)], check=True,
                               stdout=subprocess.PIPE, text=True)
        steps = json.loads(child.stdout)
        runs.append({"rows": sizes["potential_rows"], "requested_rows": rows, "study": sizes,
                     "wall_seconds": round(sum(s["wall_seconds"] for s in steps.values()), 3),
                     "peak_rss_bytes": max(s["peak_rss_bytes"] for s in steps.values()), "steps": steps})
    if args.merge and args.json.exists():
        done = {r["requested_rows"] for r in runs}
        runs += [r for r in json.loads(args.json.read_text())["runs"] if r["requested_rows"] not in done]
    runs.sort(key=lambda r: r["rows"])
    analysis = load_params(ROOT / "params.yaml").analysis
    result = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
                         f"{platform.python_version()}",
              "analysis": {"threads": analysis.threads, "memory_limit": analysis.memory_limit},
              "seed": args.seed, "queries": QUERIES, "runs": runs}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    args.json.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
