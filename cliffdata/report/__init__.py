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
import shutil
from collections.abc import Sequence
from pathlib import Path

from tqdm.auto import tqdm

from cliffdata.report.data import ReportData, index_row, load_report_data, trace_payload
from cliffdata.report.pages import index_page, page_name, trace_page, z_of
from cliffdata.stats import wilson_interval

log = logging.getLogger(__name__)

__all__ = ["ReportData", "build_report", "load_report_data"]


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
    """Write the index, one page per trace and the `dvc plots` curves under `out` (replaced); returns a
    summary for metrics. `plots`/`num_plots`: see `plot_traces`."""
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
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
    log.info("report: %d trace pages under %s, largest %s (%d bytes)", len(sizes), out, summary["largest_page"],
             summary["largest_page_bytes"])
    return summary
