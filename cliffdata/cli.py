"""The `cliffdata` command line.

    cliffdata sql "select category, count(*) from cliffs group by all order by all"
    cliffdata sql --file q.sql --root . --format csv
    cliffdata sql --schema                 # every view, its rows and columns
    cliffdata sql --timeout 60 --format csv "select * from token_stats" > token_stats.csv
    cliffdata risk "arith/word1-00006#0" --top 5     # the riskiest tokens of a trace, before any rollout
    cliffdata --version

Each subcommand is an `add_<name>(commands)` that builds its parser and sets `run`, a function of the
parsed arguments returning the exit status; add one to COMMANDS to add a subcommand.
Exit status: 0 ok, 1 the query failed (or ran past its time limit), 2 usage error or refused (not
read-only) SQL, 130 interrupted (Ctrl-C), 143 terminated (SIGTERM), 141 the reader of stdout went away.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from collections.abc import Iterator
from importlib.metadata import version as package_version
from pathlib import Path
from typing import TextIO

import duckdb

from cliffdata import schema
from cliffdata.analysis import duck, sandbox
from cliffdata.config.analysis import AnalysisConfig


def format_table(columns: list[str], rows: list[tuple], more: bool = False) -> str:
    """An aligned text table: numbers right-aligned, floats to 6 significant digits, NULL for null.
    `more`: the rows are the first of a longer result (said in the last line)."""
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
    lines.append(f"(first {len(rows)} row{'' if len(rows) == 1 else 's'}; more not shown)" if more
                 else f"({len(rows)} row{'' if len(rows) == 1 else 's'})")
    return "\n".join(lines) + "\n"


def format_csv(columns: list[str], rows: list[tuple]) -> str:
    return duck.format_csv(columns, [list(row) for row in rows])


def format_json(columns: list[str], rows: list[tuple]) -> str:
    return json.dumps([dict(zip(columns, row)) for row in rows], indent=2, default=str) + "\n"


FORMATS = {"table": format_table, "csv": format_csv, "json": format_json}


def _at_least_zero(kind: type):
    """An argparse type: a number of `kind` (int, float), 0 or more."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not value >= 0:
            raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
        return value
    return parse


def add_sql(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "sql", help="run a read-only query over the datasets",
        description="Run read-only SQL (SELECT, PIVOT, EXPLAIN) over views named after the datasets that exist: "
                    f"{', '.join(schema.PATHS)}, and the study's `study.<dataset>` (every model's rows with a "
                    f"`model` column, `study.models`) where --root has a params.yaml (`--schema` lists those "
                    f"found, with their columns). Its `analysis` section (else the defaults) sets DuckDB's "
                    f"threads, memory limit and spill folder cap, and the defaults of --timeout and --max-rows. "
                    f"csv and json stream every row; Ctrl-C stops a query at once.")
    parser.add_argument("query", nargs="?", help="the SQL to run (or use --file); several statements print "
                                                 "one result each")
    parser.add_argument("--file", type=Path, help="read the SQL from this file")
    parser.add_argument("--schema", action="store_true", help="list the views (datasets found), rows and columns")
    parser.add_argument("--root", type=Path, default=Path("."), help="repository root (default: .)")
    parser.add_argument("--format", choices=sorted(FORMATS), default="table")
    parser.add_argument("--timeout", type=_at_least_zero(float), metavar="SECONDS",
                        help="stop a statement that computes for longer (default: analysis.sql_timeout; 0: no limit)")
    parser.add_argument("--max-rows", type=_at_least_zero(int), metavar="N",
                        help="--format table prints at most N rows (default: analysis.sql_max_rows; 0: all, held in "
                             "memory); csv and json stream every row")
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


def project_params(root: Path):
    """`root`'s params.yaml (its `analysis` section and the study's models: the `study.<dataset>` views, with
    a `model` column); None without one. A params.yaml that does not validate is an error naming its key."""
    if not (root / "params.yaml").exists():
        return None
    from cliffdata.config.load import load_params

    return load_params(root / "params.yaml")


def write_json(out: TextIO, columns: list[str], batches: Iterator[list[tuple]], depth: int = 0) -> None:
    """A list of records (one object per row), written batch by batch, laid out as `json.dumps(indent=2)`
    lays out the whole list `depth` levels deep."""
    pad = "  " * (depth + 1)
    first = True
    for rows in batches:
        records = [json.dumps(dict(zip(columns, row)), indent=2, default=str).replace("\n", "\n" + pad)
                   for row in rows]
        if records:
            out.write(("[\n" if first else ",\n") + pad + (",\n" + pad).join(records))
            first = False
    out.write("[]" if first else "\n" + "  " * depth + "]")


def write_results(con: duckdb.DuckDBPyConnection, queries: list[str], fmt: str, timeout: float,
                  max_rows: int) -> None:
    """Run each read-only statement (`sandbox.stream`, under `timeout` seconds, 0: none) and print its result
    as it comes: csv and json write every row batch by batch (memory bounded, whatever the size); table
    measures its column widths, so it prints at most `max_rows` rows (0: all) and says on stderr how to
    get the rest. Several statements: one result each (json: a list of them)."""
    out = sys.stdout
    several = fmt == "json" and len(queries) > 1
    if several:
        out.write("[\n")
    for n, query in enumerate(queries):
        batches = sandbox.stream(con, query, timeout)
        try:
            columns = next(batches)
            if fmt == "json":
                out.write((",\n" if n else "") + ("  " if several else ""))
                write_json(out, columns, batches, depth=1 if several else 0)
                continue
            if n:
                out.write("\n")
            if fmt == "csv":
                out.write(duck.format_csv(columns, []))
                for rows in batches:
                    out.write(duck.format_csv(columns, rows, header=False))
                continue
            rows, more = [], False
            for batch in batches:
                rows.extend(batch)
                if max_rows and len(rows) > max_rows:
                    rows, more = rows[:max_rows], True
                    break
            if columns == ["explain_key", "explain_value"]:
                out.write("".join(f"{value}\n" for _, value in rows))   # a plan is a drawing: print it as is
            else:
                out.write(format_table(columns, rows, more))
            if more:
                out.flush()
                print(f"cliffdata sql: more than {max_rows} rows, the rest not shown: --max-rows N prints N "
                      f"(0: all), --format csv or json streams every row", file=sys.stderr)
        finally:
            batches.close()                  # a result left early is interrupted, not run to its end
    out.write("\n]\n" if several else "\n" if fmt == "json" else "")


class Terminated(BaseException):
    """SIGTERM, raised in the main thread as Ctrl-C raises KeyboardInterrupt, so that `cliffdata sql` cleans
    up as it leaves (the query interrupted, the connection closed, its spill folder removed)."""


def _terminate(signum, frame):
    raise Terminated


def _drop_stdout() -> None:
    """Point stdout at /dev/null: its reader went away, and the interpreter's last flush would fail again."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):
        pass


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
            sql = args.file.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as e:
            print(f"cliffdata sql: cannot read --file {args.file}: not UTF-8 text (byte {e.object[e.start]:#04x} "
                  f"at offset {e.start})", file=sys.stderr)
            return 2
        except OSError as e:
            print(f"cliffdata sql: cannot read --file: {e}", file=sys.stderr)
            return 2
    else:
        sql = args.query
    # Ctrl-C raises KeyboardInterrupt in this thread, SIGTERM Terminated: both leave through the `finally`s
    # below (query interrupted, spill folder removed). A signal handler can only be set in the main thread.
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if in_main else None
    try:
        return _sql(args, sql)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print("terminated", file=sys.stderr)
        return 143
    except BrokenPipeError:              # `cliffdata sql … | head`: the reader has what it wanted
        _drop_stdout()
        return 141
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def _sql(args: argparse.Namespace, sql: str) -> int:
    try:
        params = project_params(args.root)
        cfg = params.analysis if params is not None else AnalysisConfig()
        if params is not None:
            from cliffdata.study import members

            con = sandbox.connect_sandbox(args.root, cfg, members=members(params))
        else:
            con = sandbox.connect_sandbox(args.root, cfg)
    except ValueError as e:              # no dataset, a file that is not Parquet or not the dataset's, a link
        hint = f"; {NO_DATASET_HINT}" if str(e).startswith("no dataset") else ""
        print(f"cliffdata sql: {e}{hint}", file=sys.stderr)
        return 2
    timeout = cfg.sql_timeout if args.timeout is None else args.timeout
    max_rows = cfg.sql_max_rows if args.max_rows is None else args.max_rows
    try:
        if args.schema:
            print_schema(con)
            return 0
        write_results(con, sandbox.readonly_statements(con, sql), args.format, timeout, max_rows)
        return 0
    except sandbox.TimeLimitExceeded as e:
        print(f"error: {e} (analysis.sql_timeout): raise it with --timeout SECONDS, 0 for no limit",
              file=sys.stderr)
        return 1
    except duckdb.OutOfMemoryException as e:
        # DuckDB's advice (SET / PRAGMA) cannot apply here: the configuration is locked; the params can
        print(f"error: {str(e).strip().splitlines()[0]} (analysis.memory_limit = {cfg.memory_limit}, "
              f"analysis.max_temp_directory_size = {cfg.max_temp_directory_size})", file=sys.stderr)
        return 1
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
        duck.close(con)


def add_report(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "report", help="build the static trace explorer (index + one page per trace)",
        description="Write a self-contained HTML site (opens offline) from the datasets under --root: "
                    "the same as the `report` stage, with the `report` section of --params.")
    parser.add_argument("--root", type=Path, default=Path("."), help="repository root (default: .)")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default: ROOT/reports); replaced only if it is new, empty or a previous "
                             "report; never ROOT, a folder above it, or ROOT/data, ROOT/models")
    parser.add_argument("--params", type=Path, default=None,
                        help="params file for the `report` and `cliffs` sections (default: ROOT/params.yaml); "
                             "needed: the cliff test (`cliffs.test`) has no default")
    parser.add_argument("--tokenizer", default="models/base", help="tokenizer folder or id (default: models/base)")
    parser.set_defaults(run=run_report)


def run_report(args: argparse.Namespace) -> int:
    from transformers import AutoTokenizer

    from cliffdata.config.load import load_params
    from cliffdata.publish.report import build_report, check_out_dir, load_report_data, study_sites

    out = args.out if args.out is not None else args.root / "reports"
    params_path = args.params if args.params is not None else args.root / "params.yaml"
    if not params_path.exists():
        print(f"cliffdata report: {params_path} not found: the report reads the cliff test the cliffs stage ran "
              f"with (`cliffs.test`) and the `report` section from the project's params; pass --params",
              file=sys.stderr)
        return 2
    try:
        params = load_params(params_path)
        report_cfg = params.report
        check_out_dir(out, args.root)
        data = load_report_data(args.root, params.cliffs)
        model, others = study_sites(args.root, params)
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
    from cliffdata import tracking

    root = args.params.resolve().parent
    try:
        tracking.require_reachable(tracking.tracking_uri(root))
    except tracking.TrackingUnreachable as e:
        print(f"cliffdata promote: {e}", file=sys.stderr)
        return 2
    import mlflow

    from cliffdata.config.load import load_params
    from cliffdata.dpo import registry

    params = load_params(args.params)
    name = args.model or registry.registered_model_name(params.model.source)
    eval_metric = params.dpo_eval.metric if params.dpo_eval else "eval_accuracy"
    mlflow.set_tracking_uri(tracking.tracking_uri(root))
    try:
        variants = params.dpo_train.variants if params.dpo_train else ()
        out = registry.promote(root, name, args.metric or eval_metric, eval_metric, params.token_stats.top_k,
                               variants, greater_is_better=not args.lower_is_better)
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
                    "(JSONL). See cliffdata/publish/export.py for the formats.")
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
    from cliffdata import schema
    from cliffdata.publish import export
    from cliffdata.publish.outputs import check_target

    try:
        data_root, source = args.root, None
        if args.model is not None:
            if args.what == "pairs":
                raise ValueError("--model: Cliff-DPO pairs are the pipeline's own model's (a study model has none)")
            from cliffdata.config.load import load_params
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
                from cliffdata.config.load import load_params

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


def add_risk(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "risk", help="the cliff risk of every token of a trace or of new text, before any rollout",
        description="Score each token with the risk model the `risk` stage fit (runs/risk.json): the features "
                    "no rollout needs (the sampler's probability of the token and of the greedy token, "
                    "entropies, rank, margin, relative position), computed as the risk_labels stage computes "
                    "them. A trace of the datasets reads its token_stats rows and shows the cliff test's "
                    "verdict where the rollouts tested the token; new text (--question and --response) runs "
                    "the model at models/base once.")
    parser.add_argument("trace_id", nargs="?", help="a trace of data/sample (e.g. arith/word1-00006#0)")
    parser.add_argument("--question", help="new text: the problem, put in the prompt --prompt names")
    parser.add_argument("--response", help="new text: the response whose tokens are scored")
    parser.add_argument("--prompt", help="new text: the prompt (a key of params `prompts`; default: the first "
                                         "problem source's)")
    parser.add_argument("--root", type=Path, default=Path("."), help="repository root (default: .)")
    parser.add_argument("--top", type=int, default=None, help="only the K riskiest tokens, riskiest first")
    parser.add_argument("--format", choices=["table", "csv", "json"], default="table")
    parser.set_defaults(run=run_risk)


def risk_rows(args: argparse.Namespace) -> tuple[list[str], list[tuple]]:
    """The scored tokens of `args` (a trace id, or --question and --response) as columns and rows."""
    from transformers import AutoTokenizer

    from cliffdata.cliffs.stats import min_detectable_drop
    from cliffdata.config.load import load_params
    from cliffdata.prompts import encode_prompt
    from cliffdata.risk.score import load_model, of_trace, text_token_stats, trace_risk

    root = args.root
    params = load_params(root / "params.yaml")
    model = load_model(root)
    sampling = params.rollouts.sampling
    tokenizer = AutoTokenizer.from_pretrained(root / "models/base")
    verdicts: dict[int, tuple] = {}
    if args.trace_id is not None:
        traces = schema.read("traces", root / schema.PATHS["traces"])
        found = of_trace(traces, args.trace_id).to_pylist()
        if not found:
            raise ValueError(f"no trace {args.trace_id!r} in {schema.PATHS['traces']}")
        stats = of_trace(schema.read("token_stats", root / schema.PATHS["token_stats"]), args.trace_id)
        response = found[0]["response_ids"]
        labels = root / schema.PATHS["risk_labels"]
        if labels.exists():                      # the rollouts' verdict at the tokens they tested
            tested = of_trace(schema.read("risk_labels", labels), args.trace_id)
            verdicts = {i: (d, c) for i, d, c in zip(*(tested[k].to_pylist() for k in ("token_index", "delta",
                                                                                         "is_cliff")))}
    else:
        if not args.question or args.response is None:
            raise ValueError("give a trace id, or new text with both --question and --response")
        name = args.prompt or params.problems.sources[0].prompt
        if name not in params.prompts:
            raise ValueError(f"--prompt {name!r} is not in params `prompts` (known: {sorted(params.prompts)})")
        prompt_ids = encode_prompt(tokenizer, params.prompts[name], args.question)
        response = tokenizer.encode(args.response, add_special_tokens=False)
        stats = text_token_stats(root / "models/base", prompt_ids, response, params.token_stats, sampling)
    delta_min = min_detectable_drop(params.rollouts.num_rollouts, params.rollouts.num_rollouts, params.cliffs.test)
    scored = trace_risk(stats, len(response), model, sampling, delta_min).to_pylist()
    if args.top is not None:
        scored = sorted(scored, key=lambda r: (r["risk"] is None, -(r["risk"] or 0.0), r["token_index"]))[:args.top]
    columns = ["token_index", "token", "sampler_prob", "max_drop", "feasible", "risk", "measured_drop", "cliff"]
    rows = [(r["token_index"], tokenizer.decode([r["token_id"]]).encode("unicode_escape").decode("ascii"),
             r["sampler_prob"], r["max_drop"], r["feasible"], r["risk"], *verdicts.get(r["token_index"], (None, None)))
            for r in scored]
    return columns, rows


def run_risk(args: argparse.Namespace) -> int:
    try:
        columns, rows = risk_rows(args)
    except ValueError as e:
        print(f"cliffdata risk: {e}", file=sys.stderr)
        return 2
    if args.format == "json":
        print(json.dumps([dict(zip(columns, r)) for r in rows], indent=1))
    elif args.format == "csv":
        print(duck.format_csv(columns, [list(r) for r in rows]), end="")
    else:
        print(format_table(columns, rows))
    return 0


COMMANDS = (add_sql, add_report, add_promote, add_export, add_risk)


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
