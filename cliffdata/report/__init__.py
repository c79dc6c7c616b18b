"""The trace explorer: a static, self-contained site under `reports/` (the `report` stage).

    python pipeline/report.py                       # the DVC stage
    cliffdata report --root . --out reports         # the same from the command line

`reports/index.html` lists every trace (sortable, filterable); `reports/traces/<name>.html` draws one
trace: the potential curve with its Wilson band, cliff markers by category, the critical token,
the evaluated positions (adaptive mode), and the response token by token with hover details.
Pages have no external references (no CDN), so the folder opens offline and can be zipped and shared.
"""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

from tqdm.auto import tqdm

from cliffdata.report.data import ReportData, index_row, load_report_data, trace_payload
from cliffdata.report.pages import index_page, page_name, trace_page

log = logging.getLogger(__name__)

__all__ = ["ReportData", "build_report", "load_report_data"]


def build_report(data: ReportData, tokenizer, out: str | Path, level: float = 0.95,
                 title: str = "cliffdata report") -> dict:
    """Write the index and one page per trace under `out` (replaced); returns a summary for metrics."""
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
    largest = max(sizes, key=sizes.get) if sizes else None
    summary = {"num_pages": len(sizes), "total_bytes": sum(sizes.values()),
               "largest_page": hrefs.get(largest), "largest_page_bytes": sizes.get(largest, 0),
               "largest_page_tokens": len(data.traces[largest]["response_ids"]) if largest else 0}
    log.info("report: %d trace pages under %s, largest %s (%d bytes)", len(sizes), out, summary["largest_page"],
             summary["largest_page_bytes"])
    return summary
