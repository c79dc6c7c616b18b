"""The trace explorer: a static, self-contained site under `reports/` (the `report` stage).

    python pipeline/report.py                       # the DVC stage
    cliffdata report --root . --out reports         # the same from the command line

`reports/index.html` lists every trace (sortable, filterable); `reports/traces/<name>.html` draws one
trace: the potential curve with its Wilson band, cliff markers by category, the critical token,
the evaluated positions (adaptive mode), and the response token by token with hover details.
`reports/potentials/<name>.csv` holds the curves of a few selected traces (token_index, potential,
lower, upper, num_rollouts) for `dvc plots show` / `dvc plots diff`.
Pages have no external references (no CDN), so the folder opens offline and can be zipped and shared.
"""
from __future__ import annotations

import csv
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from tqdm.auto import tqdm

from cliffdata.report.data import ReportData, index_row, load_report_data, trace_payload
from cliffdata.report.pages import index_page, page_name, trace_page, z_of
from cliffdata.stats import wilson_interval

log = logging.getLogger(__name__)

__all__ = ["ReportData", "build_report", "check_out_dir", "load_report_data"]

#: written into every report folder: only a folder holding it is ever replaced by `build_report`
MARKER = ".cliffdata-report"


def check_out_dir(out: Path, root: Path | None = None) -> None:
    """Refuse an output folder that `build_report` must not replace (ValueError naming it).

    Allowed: a path that does not exist, an empty folder, or a previous report (it holds MARKER).
    With `root`: never `root` itself, a folder above it, or its `data/` and `models/` (or anything in them).
    """
    out = Path(out).resolve()
    if root is not None:
        root = Path(root).resolve()
        if out == root or out in root.parents:
            raise ValueError(f"--out {out} is or contains --root {root}: the report would replace the repository")
        for tracked in ("data", "models"):
            folder = root / tracked
            if out == folder or folder in out.parents or out in folder.parents:
                raise ValueError(f"--out {out} overlaps {folder}: DVC-tracked data is never a report folder")
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise ValueError(f"report folder {out} exists and is not a folder: not replacing it")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise ValueError(f"report folder {out} is not empty and holds no previous report ({MARKER} missing): "
                         f"not replacing it; choose an empty or new folder")


def _swap_in(tmp: Path, out: Path) -> None:
    """Put the finished folder `tmp` at `out`, moving a previous report aside first and deleting it last."""
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.rename(out, old / out.name)
    os.rename(tmp, out)
    if old is not None:
        shutil.rmtree(old)


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
                 title: str = "cliffdata report", plots: Sequence[str] = (), num_plots: int = 4) -> dict:
    """Write the index, one page per trace and the `dvc plots` curves under `out`; returns a summary
    for metrics. `plots`/`num_plots`: see `plot_traces`.

    The site is built in a temporary sibling folder and renamed into place when complete, so a failed
    run leaves the previous report as it was; `out` is replaced only if `check_out_dir` allows it.
    """
    out = Path(out).absolute()
    check_out_dir(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        summary = _write_site(data, tokenizer, tmp, level, title, plots, num_plots)
        (tmp / MARKER).write_text("written by cliffdata report; this folder is replaced by the next report\n")
        os.chmod(tmp, 0o755)                                   # mkdtemp makes it 0700
        check_out_dir(out)                                     # again: something may have appeared meanwhile
        _swap_in(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("report: %d trace pages under %s, largest %s (%d bytes)", summary["num_pages"], out,
             summary["largest_page"], summary["largest_page_bytes"])
    return summary


def _write_site(data: ReportData, tokenizer, out: Path, level: float, title: str, plots: Sequence[str],
                num_plots: int) -> dict:
    (out / "traces").mkdir(parents=True)
    rows, hrefs, sizes = [], {}, {}
    for trace_id in tqdm(sorted(data.traces), desc="report", unit="trace"):
        name = page_name(trace_id)
        page = trace_page(trace_payload(data, trace_id, tokenizer), level)
        (out / "traces" / name).write_text(page, encoding="utf-8")
        hrefs[trace_id] = f"traces/{name}"
        sizes[trace_id] = len(page.encode("utf-8"))
        rows.append(index_row(data, trace_id))
    (out / "index.html").write_text(index_page(rows, hrefs, title), encoding="utf-8")
    (out / "potentials").mkdir()
    plotted = plot_traces(data, plots, num_plots)
    for trace_id in plotted:
        write_potential_plot(data, trace_id, out / "potentials" / page_name(trace_id).replace(".html", ".csv"), level)
    largest = max(sizes, key=sizes.get) if sizes else None
    summary = {"num_pages": len(sizes), "total_bytes": sum(sizes.values()),
               "largest_page": hrefs.get(largest), "largest_page_bytes": sizes.get(largest, 0),
               "largest_page_tokens": len(data.traces[largest]["response_ids"]) if largest else 0,
               "num_plotted_traces": len(plotted)}
    return summary
