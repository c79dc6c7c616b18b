"""The `cliffdata` command line.

    cliffdata sql "select category, count(*) from cliffs group by all order by all"
    cliffdata sql --file q.sql --root . --format csv
    cliffdata sql --schema                 # every view, its rows and columns
    cliffdata --version

Each subcommand is an `add_<name>(commands)` that builds its parser and sets `run`, a function of the
parsed arguments returning the exit status; add one to COMMANDS to add a subcommand.
Exit status: 0 ok, 1 the query failed, 2 usage error or refused (not read-only) SQL.
"""
from __future__ import annotations

import argparse
import json
import sys
from importlib.metadata import version as package_version
from pathlib import Path

import duckdb

from cliffdata import duck, schema


def format_table(columns: list[str], rows: list[tuple]) -> str:
    """An aligned text table: numbers right-aligned, floats to 6 significant digits, NULL for null."""
    def cell(value) -> str:
        if value is None:
            return "NULL"
        if isinstance(value, bool):
            return str(value).lower()
        if isinstance(value, float):
            return f"{value:.6g}"
        return str(value)

    cells = [[cell(v) for v in row] for row in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    numeric = [all(isinstance(row[i], (int, float)) and not isinstance(row[i], bool)
                   for row in rows if row[i] is not None) and any(row[i] is not None for row in rows)
               for i in range(len(columns))]

    def line(values: list[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w)
                         for v, w, num in zip(values, widths, numeric)).rstrip()

    lines = [line(columns), "  ".join("-" * w for w in widths)]
    lines += [line(row) for row in cells]
    lines.append(f"({len(rows)} row{'' if len(rows) == 1 else 's'})")
    return "\n".join(lines) + "\n"


def format_csv(columns: list[str], rows: list[tuple]) -> str:
    return duck.format_csv(columns, [list(row) for row in rows])


def format_json(columns: list[str], rows: list[tuple]) -> str:
    return json.dumps([dict(zip(columns, row)) for row in rows], indent=2, default=str) + "\n"


FORMATS = {"table": format_table, "csv": format_csv, "json": format_json}


def add_sql(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "sql", help="run a read-only query over the datasets",
        description="Run read-only SQL (SELECT, EXPLAIN) over views named after the datasets that exist: "
                    f"{', '.join(schema.PATHS)}, and the study's `study.<dataset>` (every model's rows with a "
                    f"`model` column, `study.models`) where --root has a params.yaml (`--schema` lists those "
                    f"found, with their columns).")
    parser.add_argument("query", nargs="?", help="the SQL to run (or use --file); several statements print "
                                                 "one result each")
    parser.add_argument("--file", type=Path, help="read the SQL from this file")
    parser.add_argument("--schema", action="store_true", help="list the views (datasets found), rows and columns")
    parser.add_argument("--root", type=Path, default=Path("."), help="repository root (default: .)")
    parser.add_argument("--format", choices=sorted(FORMATS), default="table")
    parser.set_defaults(run=run_sql)


NO_DATASET_HINT = ("the datasets come from the pipeline: `dvc pull` (or `dvc repro`) in the repository, "
                   "or point --root at one")


def print_schema(con: duckdb.DuckDBPyConnection) -> None:
    """Every view with its row count and columns (name, DuckDB type)."""
    out = []
    for name in sorted(duck.views(con)):         # view names are the datasets of schema.PATHS
        quoted = ".".join(f'"{part}"' for part in name.split("."))     # study.cliffs: schema and view
        num_rows = con.sql(f"select count(*) from {quoted}").fetchall()[0][0]
        columns = con.sql(f"describe {quoted}").fetchall()
        width = max(len(c[0]) for c in columns)
        out.append(f"{name} ({num_rows} row{'' if num_rows == 1 else 's'})")
        out += [f"  {c[0].ljust(width)}  {c[1]}" for c in columns]
    sys.stdout.write("\n".join(out) + "\n")


def study_members(root: Path):
    """The study's models when `root` has a params.yaml (the `study.<dataset>` views, with a `model` column);
    None without one. A params.yaml that does not validate is an error naming its key."""
    if not (root / "params.yaml").exists():
        return None
    from cliffdata.config import load_params
    from cliffdata.study import members

    return members(load_params(root / "params.yaml"))


def run_sql(args: argparse.Namespace) -> int:
    given = [x for x in (args.query, args.file) if x is not None]
    if args.schema and given or len(given) > 1:
        print("cliffdata sql: give one of a query, --file or --schema", file=sys.stderr)
        return 2
    if not given and not args.schema:
        print("cliffdata sql: give a query (or --file FILE); `cliffdata sql --schema` lists the views and their "
              "columns", file=sys.stderr)
        return 2
    if args.file is not None:
        try:
            sql = args.file.read_text()
        except OSError as e:
            print(f"cliffdata sql: cannot read --file: {e}", file=sys.stderr)
            return 2
    else:
        sql = args.query
    try:
        con = duck.connect_sandbox(args.root, members=study_members(args.root))
    except ValueError as e:              # no dataset, or a file that is not Parquet
        hint = f"; {NO_DATASET_HINT}" if str(e).startswith("no dataset") else ""
        print(f"cliffdata sql: {e}{hint}", file=sys.stderr)
        return 2
    try:
        if args.schema:
            print_schema(con)
            return 0
        results = duck.readonly_results(con, sql)
    except duckdb.Error as e:
        # DuckDB's whole message: its suggestion ("Did you mean"), candidate bindings and the caret
        message = str(e).strip()
        if isinstance(e, duckdb.PermissionException) or "configuration has been locked" in message:
            # the sandbox: a file, folder or URL outside the datasets, an extension, or a setting (one line)
            print(f"refused: {message.splitlines()[0]}", file=sys.stderr)
            return 2
        print(f"error: {message}", file=sys.stderr)
        return 1
    except ValueError as e:  # a refusal: not read-only
        print(e, file=sys.stderr)
        return 2
    finally:
        con.close()
    if args.format == "json":            # one list of records per statement when there are several
        records = [json.loads(format_json(columns, rows)) for columns, rows in results]
        sys.stdout.write(json.dumps(records if len(records) > 1 else records[0], indent=2) + "\n")
        return 0
    for n, (columns, rows) in enumerate(results):
        if n:
            sys.stdout.write("\n")
        if args.format == "table" and columns == ["explain_key", "explain_value"]:
            sys.stdout.write("".join(f"{value}\n" for _, value in rows))  # a plan is a drawing: print it as is
        else:
            sys.stdout.write(FORMATS[args.format](columns, rows))
    return 0


def add_report(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "report", help="build the static trace explorer (index + one page per trace)",
        description="Write a self-contained HTML site (opens offline) from the datasets under --root: "
                    "the same as the `report` stage, with the `report` section of --params.")
    parser.add_argument("--root", type=Path, default=Path("."), help="repository root (default: .)")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default: ROOT/reports); replaced only if it is new, empty or a previous "
                             "report; never ROOT, a folder above it, or ROOT/data, ROOT/models")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"),
                        help="params file for the `report` and `cliffs` sections (defaults where missing)")
    parser.add_argument("--tokenizer", default="models/base", help="tokenizer folder or id (default: models/base)")
    parser.set_defaults(run=run_report)


def run_report(args: argparse.Namespace) -> int:
    from transformers import AutoTokenizer

    from cliffdata.config import CliffsConfig, ReportConfig, load_params
    from cliffdata.report import build_report, check_out_dir, load_report_data, study_sites

    out = args.out if args.out is not None else args.root / "reports"
    params = load_params(args.params) if args.params.exists() else None
    report_cfg, cliffs_cfg = (params.report, params.cliffs) if params else (ReportConfig(), CliffsConfig())
    try:
        check_out_dir(out, args.root)
        data = load_report_data(args.root, cliffs_cfg)
        model, others = study_sites(args.root, params) if params else ("", [])
    except ValueError as e:
        print(f"cliffdata report: {e}", file=sys.stderr)
        return 2
    tokenizer = AutoTokenizer.from_pretrained(args.root / args.tokenizer if (args.root / args.tokenizer).exists()
                                              else args.tokenizer)
    summary = build_report(data, tokenizer, out, report_cfg.level, report_cfg.title, report_cfg.plot_traces,
                           report_cfg.num_plot_traces, model, others)
    print(f"{summary['num_pages']} trace pages: open {out / 'index.html'} "
          f"(largest page {summary['largest_page_bytes']} bytes)")
    return 0


def add_promote(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "promote", help="set the registry alias `champion` on the Cliff-DPO adapter with the best eval metric",
        description="Promotion is a decision, not a pipeline step: rank the evaluated adapters by a metric of "
                    "metrics/dpo_eval.json (DVC-tracked; the names dpo_eval logs to MLflow, or a key of its "
                    "cells), record the winner in runs/champion.json (commit it: cpm_shift reads it) and point "
                    "the alias `champion` of cliff-dpo-<model> at its version, restoring the run and version "
                    "first in a store that lacks them (a fresh clone). Then models:/cliff-dpo-<model>@champion "
                    "loads base + adapter.")
    parser.add_argument("--metric", default=None,
                        help="metric to rank by (default: params dpo_eval.metric, eval_accuracy; also "
                             "eval_accuracy_diff, diff_to_control, ...)")
    parser.add_argument("--lower-is-better", action="store_true", help="the smallest metric wins (e.g. a loss)")
    parser.add_argument("--model", help="registered model name (default: cliff-dpo-<model.source of --params>)")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"),
                        help="the project's params.yaml (its folder is the project: metrics, runs, models)")
    parser.set_defaults(run=run_promote)


def run_promote(args: argparse.Namespace) -> int:
    import mlflow

    from cliffdata import tracking
    from cliffdata.config import load_params
    from cliffdata.dpo import registry

    root = args.params.resolve().parent
    params = load_params(args.params)
    name = args.model or registry.registered_model_name(params.model.source)
    eval_metric = params.dpo_eval.metric if params.dpo_eval else "eval_accuracy"
    mlflow.set_tracking_uri(tracking.tracking_uri(root))
    try:
        out = registry.promote(root, name, args.metric or eval_metric, eval_metric, params.token_stats.top_k,
                               greater_is_better=not args.lower_is_better)
    except (ValueError, FileNotFoundError) as e:
        print(f"cliffdata promote: {e}", file=sys.stderr)
        return 2
    print(f"{name}@{registry.CHAMPION} -> version {out['version']} (variant {out['variant']}, "
          f"{out['metric']} = {out['value']:.6g}, run {out['run_id']}); recorded in {registry.CHAMPION_RECORD}")
    return 0


def add_export(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "export", help="export pairs (TRL), potentials (HF datasets) or cliffs (PTS v2 events)",
        description="pairs: TRL prompt_ids/chosen_ids/rejected_ids as .jsonl or .parquet; potentials: a Hugging "
                    "Face dataset folder (save_to_disk) with a dataset card; pts: PTS v2 pivotal-token events "
                    "(JSONL). See cliffdata/export.py for the formats.")
    parser.add_argument("what", choices=("pairs", "potentials", "pts"))
    parser.add_argument("--out", type=Path, required=True, help="output file (pairs, pts) or folder (potentials)")
    parser.add_argument("--root", type=Path, default=Path("."), help="repository root (default: .)")
    parser.add_argument("--pairs", type=Path, default=None,
                        help="pairs: the Cliff-DPO pairs file (default: the dpo_pairs dataset's path)")
    parser.add_argument("--split", default=None, help="pairs: keep one split (train | heldout)")
    parser.add_argument("--model", default=None, metavar="NAME",
                        help="potentials, pts: a study model (study.models.NAME): its datasets under "
                             "ROOT/study/NAME/ (default: the pipeline's own model)")
    parser.add_argument("--model-id", default=None,
                        help="pts: the model the cliffs belong to (default: params model.source, or the study "
                             "model's source)")
    parser.add_argument("--tokenizer", default="models/base", help="pts: tokenizer folder or id (default: models/base)")
    parser.set_defaults(run=run_export)


def run_export(args: argparse.Namespace) -> int:
    from cliffdata import export, schema
    from cliffdata.outputs import check_target

    try:
        data_root, source = args.root, None
        if args.model is not None:
            if args.what == "pairs":
                raise ValueError("--model: Cliff-DPO pairs are the pipeline's own model's (a study model has none)")
            from cliffdata.config import load_params
            from cliffdata.study import members

            study = {m.name: m for m in members(load_params(args.root / "params.yaml"))[1:]}
            if args.model not in study:
                raise ValueError(f"--model {args.model}: study.models has no such model (known: "
                                 f"{', '.join(study) or 'none'})")
            data_root, source = args.root / study[args.model].root, study[args.model].source
        pairs_path = args.pairs or args.root / schema.PATHS.get("dpo_pairs", "data/dpo_pairs/all.parquet")
        check_target(args.out, args.root, inputs=[pairs_path] if args.what == "pairs" else [], what="export")
        if args.what == "pairs":
            table = export.trl_pairs(export.read_pairs(pairs_path), args.split)
            export.write_pairs(table, args.out)
            print(f"{table.num_rows} preference pairs -> {args.out}")
        elif args.what == "potentials":
            title = "cliffdata token-level value labels" + (f" ({args.model})" if args.model else "")
            counts = export.export_potentials(data_root, args.out, title, problems_root=args.root)
            print(f"{counts['num_traces']} traces, {counts['num_labelled']} labelled positions -> {args.out}")
        else:
            from transformers import AutoTokenizer

            model_id = args.model_id or source
            if model_id is None:
                from cliffdata.config import load_params

                model_id = load_params(args.root / "params.yaml").model.hub_id
            local = data_root / args.tokenizer
            tokenizer = AutoTokenizer.from_pretrained(local if local.exists() else args.tokenizer)
            events = export.pts_events(data_root, tokenizer, model_id, problems_root=args.root)
            for event in events:
                export.validate_pts_event(event)
            export.write_jsonl(events, args.out)
            print(f"{len(events)} PTS v2 pivotal-token events -> {args.out}")
    except (ValueError, FileNotFoundError) as e:
        print(f"cliffdata export: {e}", file=sys.stderr)
        return 2
    return 0


COMMANDS = (add_sql, add_report, add_promote, add_export)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cliffdata", description="Cliff-token pipeline tools.")
    parser.add_argument("--version", action="version", version=f"cliffdata {package_version('cliffdata')}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="command")
    for add in COMMANDS:
        add(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
