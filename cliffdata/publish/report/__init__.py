"""The trace explorer: a static, self-contained site under `reports/` (the `report` stage).

    python pipeline/report.py                       # the DVC stage
    cliffdata report --root . --out reports         # the same from the command line

`reports/index.html` lists every trace (sortable, filterable); `reports/traces/<name>.html` draws one
trace: the potential curve with its Wilson band, cliff markers by category, the critical token,
the evaluated positions (adaptive mode), and the response token by token with hover details.
`reports/potentials/<name>.csv` holds the curves of a few selected traces (token_index, potential,
lower, upper, num_rollouts) for `dvc plots show` / `dvc plots diff`. A study's report (`study.models`)
holds every model's traces, filterable by model, and `reports/compare/<problem>.html` draws the models'
curves of one problem on one plot.
Pages have no external references (no CDN), so the folder opens offline and can be zipped and shared.
"""
from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from pathlib import Path

from tqdm.auto import tqdm

from cliffdata.cliffs.stats import wilson_interval
from cliffdata.publish.outputs import check_replaceable_folder, check_target, write_folder
from cliffdata.publish.report.data import ReportData, index_row, load_report_data, trace_payload
from cliffdata.publish.report.pages import compare_page, index_page, page_name, trace_page, z_of

log = logging.getLogger(__name__)

__all__ = ["ReportData", "build_report", "check_out_dir", "load_report_data", "study_sites"]

#: written into every report folder, listing its files and their sha256: only a folder holding exactly
#: those files is ever replaced by `build_report`
MARKER = ".cliffdata-report"


def check_out_dir(out: Path, root: Path | None = None) -> None:
    """Refuse an output folder that `build_report` must not replace (ValueError naming it).

    Allowed: a path that does not exist, an empty folder, or a previous report: a folder holding exactly
    the files its MARKER lists, byte for byte (`cliffdata.publish.outputs`). With `root`: never `root` itself, a
    folder above it, its `data/`, `models/`, `study/`, a file git tracks or another output of dvc.yaml.
    """
    if root is not None:
        check_target(out, root, what="report", own=[Path(root) / "reports"])
    check_replaceable_folder(Path(out).absolute(), MARKER, "report")


def study_sites(root: Path, params) -> tuple[str, list[tuple[str, ReportData, object]]]:
    """The first model's name and every other model of the study (`study.models`, cliffdata/study.py) as
    (name, its datasets under root/study/<name>/, its tokenizer), for `build_report`. With no study
    models: ("", []), and the report is the single model's, page for page."""
    from cliffdata.publish.report.tokenizer import load_tokenizer
    from cliffdata.study import members

    study = members(params)
    if len(study) == 1:
        return "", []
    others = [(m.name, load_report_data(Path(root) / m.root, params.cliffs, problems_root=Path(root)),
               load_tokenizer(Path(root) / m.layout.path("models/base"))) for m in study[1:]]
    return study[0].name, others


def plot_traces(data: ReportData, wanted: Sequence[str], limit: int) -> list[str]:
    """The traces whose curves go to `dvc plots`: `wanted`, or the first `limit` traces with a cliff."""
    unknown = sorted(set(wanted) - set(data.potentials))
    if unknown:
        raise ValueError(f"report.plot_traces names traces without potentials: {unknown}")
    return list(wanted) if wanted else sorted(t for t in data.potentials if data.cliffs.get(t))[:limit]


def write_potential_plot(data: ReportData, trace_id: str, path: Path, level: float) -> None:
    """One trace's evaluated positions as CSV: token_index, potential, lower, upper (Wilson), num_rollouts."""
    z = z_of(level)
    pots = data.potentials[trace_id]
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["token_index", "potential", "lower", "upper", "num_rollouts"])
        for i, n, k in zip(pots.token_index, pots.num_rollouts, pots.num_correct):
            lo, hi = wilson_interval(int(k), int(n), z) if n > 0 else (0.0, 0.0)
            w.writerow([int(i), round(k / n, 6) if n > 0 else 0.0, round(lo, 6), round(hi, 6), int(n)])


def build_report(data: ReportData, tokenizer, out: str | Path, level: float = 0.95,
                 title: str = "cliffdata report", plots: Sequence[str] = (), num_plots: int = 4,
                 model: str = "", others: Sequence[tuple[str, ReportData, object]] = ()) -> dict:
    """Write the index, one page per trace and the `dvc plots` curves under `out`; returns a summary
    for metrics. `plots`/`num_plots`: see `plot_traces` (the first model's traces).

    `others`: more models of a study, (name, data, tokenizer) each; `model` names the first. With
    others the index gains a model column and filter, every trace page names its model, and each
    problem that two or more models traced gets a page comparing their curves (compare/<problem>.html).

    The site is built in a temporary sibling folder and renamed into place when complete, so a failed
    run leaves the previous report as it was; `out` is replaced only if `check_out_dir` allows it.
    """
    out = Path(out).absolute()
    summary = write_folder(out, lambda tmp: _write_site(data, tokenizer, tmp, level, title, plots, num_plots,
                                                        model, others), MARKER, "report")
    log.info("report: %d trace pages under %s, largest %s (%d bytes)", summary["num_pages"], out,
             summary["largest_page"], summary["largest_page_bytes"])
    return summary


def _write_site(data: ReportData, tokenizer, out: Path, level: float, title: str, plots: Sequence[str],
                num_plots: int, model: str = "", others: Sequence[tuple[str, ReportData, object]] = ()) -> dict:
    (out / "traces").mkdir(parents=True)
    multi = bool(others)
    sites = [(model, data, tokenizer, False)] + [(name, d, tok, True) for name, d, tok in others]
    rows, hrefs, sizes, lengths = [], {}, {}, {}
    for name_, d, tok, prefixed in sites:
        for trace_id in tqdm(sorted(d.traces), desc=f"report {name_}".rstrip(), unit="trace"):
            # the first model's pages keep their names; another model's trace id is taken with its model
            key = f"{name_}/{trace_id}" if prefixed else trace_id
            name = page_name(key)
            payload = trace_payload(d, trace_id, tok)
            if multi:
                payload["model"] = name_
            page = trace_page(payload, level)
            with open(out / "traces" / name, "x", encoding="utf-8") as f:   # "x": two ids never share a page
                f.write(page)
            hrefs[key] = f"traces/{name}"
            sizes[key] = len(page.encode("utf-8"))
            lengths[key] = len(d.traces[trace_id]["response_ids"])
            row = {**index_row(d, trace_id), "key": key}
            if multi:
                row["model"] = name_
            rows.append(row)
    compare = _write_compare_pages(sites, rows, hrefs, out) if multi else {}
    (out / "index.html").write_text(index_page(rows, hrefs, title, compare), encoding="utf-8")
    (out / "potentials").mkdir()
    plotted = plot_traces(data, plots, num_plots)
    for trace_id in plotted:
        write_potential_plot(data, trace_id, out / "potentials" / page_name(trace_id).replace(".html", ".csv"), level)
    largest = max(sizes, key=sizes.get) if sizes else None
    summary = {"num_pages": len(sizes), "total_bytes": sum(sizes.values()),
               "largest_page": hrefs.get(largest), "largest_page_bytes": sizes.get(largest, 0),
               "largest_page_tokens": lengths[largest] if largest else 0,
               "num_plotted_traces": len(plotted)}
    if multi:
        summary["num_models"] = len(sites)
        summary["num_compare_pages"] = len(compare)
    return summary


def _write_compare_pages(sites, rows: list[dict], hrefs: dict[str, str], out: Path) -> dict[str, str]:
    """One page per problem traced by two or more models: their potential curves on one plot (evaluated
    positions, k/N), cliff markers, and links to each trace's page. Returns {problem_id: href}."""
    by_problem: dict[str, list[dict]] = {}
    for r in rows:
        by_problem.setdefault(r["problem_id"], []).append(r)
    data_of = {name: d for name, d, _, _ in sites}
    (out / "compare").mkdir()
    compare = {}
    for problem_id, its in sorted(by_problem.items()):
        if len({r["model"] for r in its}) < 2:
            continue
        traces = []
        for r in its:
            d = data_of[r["model"]]
            pots = d.potentials.get(r["trace_id"])
            points = ([] if pots is None else
                      [[int(i), round(float(k) / float(n), 6)] for i, n, k, filled in
                       zip(pots.token_index, pots.num_rollouts, pots.num_correct, pots.is_filled) if n > 0 and not filled])
            traces.append({"model": r["model"], "trace_id": r["trace_id"], "href": "../" + hrefs[r["key"]],
                           "is_correct": r["is_correct"], "num_tokens": int(r["num_tokens"]), "points": points,
                           "cliffs": [[int(c["token_index"]), c["category"]] for c in d.cliffs.get(r["trace_id"], [])]})
        name = page_name(problem_id)
        payload = {"problem_id": problem_id, "question": its[0]["question"], "dataset": its[0]["dataset"],
                   "traces": traces}
        (out / "compare" / name).write_text(compare_page(payload), encoding="utf-8")
        compare[problem_id] = f"compare/{name}"
    return compare
