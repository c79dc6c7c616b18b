"""HTML of the report: the index and one page per trace, self-contained (CSS and JS inlined from
`assets/`, data as JSON in a `<script type="application/json">`), so a page opens offline from disk.
The band is the Wilson score interval of each position's k/N (`stats.wilson_interval`, computed in
`assets/trace.js`; the browser test checks the two agree).

    html = trace_page(payload, level=0.95)
    html = index_page(rows, title="cliffdata report", hrefs={trace_id: "traces/x.html"})
"""
from __future__ import annotations

import hashlib
import html
import json
import math
import re
from functools import cache
from importlib import resources

from cliffdata.cliffs.taxonomy import CATEGORIES



@cache
def asset(name: str) -> str:
    """The text of `cliffdata/publish/report/assets/<name>`."""
    return resources.files("cliffdata.publish.report").joinpath("assets", name).read_text(encoding="utf-8")


def page_name(trace_id: str) -> str:
    """A file name for a trace's page: the id made filename-safe plus a hash of the whole id (ids may
    collide once made safe). The name never starts with `.` or `-` (a hidden file, an option to a shell
    command) and never holds a path separator, whatever the id."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", trace_id)[:80].lstrip(".-") or "trace"
    return f"{safe}-{hashlib.sha256(trace_id.encode('utf-8', 'surrogatepass')).hexdigest()[:16]}.html"


def finite(data: object) -> object:
    """`data` with every NaN or infinite float replaced by None: a value that is not a number is shown as
    missing (the data checks flag it upstream, `duck.finite_checks`)."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: finite(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [finite(v) for v in data]
    return data


def script_json(data: object) -> str:
    """Compact JSON safe inside <script>: every `<`, `>` and `&` is written as a `\\u` escape (the same
    string to a JSON parser), so no `</script>`, `<!--` or `<script` in the data can end the element or
    switch the HTML parser into a script-data escape state; U+2028/9 are escaped for older JS parsers."""
    try:
        text = json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except ValueError:                                   # a NaN or inf somewhere: shown as missing
        text = json.dumps(finite(data), separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    for char, code in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(char, code)
    return text


def z_of(level: float) -> float:
    """The two-sided normal quantile of a coverage level (0.95 -> 1.96)."""
    from statistics import NormalDist

    return NormalDist().inv_cdf(0.5 + level / 2)


def _subpage_head(title: str) -> str:
    """The top of a page one folder below the index (traces/, compare/): head, back link, heading;
    `title` is already escaped."""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · cliffdata</title><style>{asset("style.css")}</style></head>
<body>
<nav><a href="../index.html">&larr; all traces</a></nav>
<h1>{title}</h1>
"""


def trace_page(payload: dict, level: float = 0.95) -> str:
    """One trace's page; `level` is the coverage of the interval band around the potential."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    data = {**payload, "level": level, "z": round(z_of(level), 6)}
    # a study's report: the page names its model (`model` in the payload)
    title = html.escape(f"{payload['model']}: {payload['trace_id']}" if payload.get("model") else payload["trace_id"])
    return _subpage_head(title) + f"""<div id="meta"></div>
<div id="question"></div>
<figure><svg id="plot" role="img" aria-label="potential curve"></svg><figcaption id="legend"></figcaption></figure>
<div id="controls"><span>colour tokens by</span>
<label><input type="radio" name="colour" value="drop" checked> potential drop</label>
<label><input type="radio" name="colour" value="entropy"> entropy</label>
<span><span id="scale"></span> <span id="scale-label" class="muted"></span></span>
<span class="muted">hover or tap a token for details; click a cliff marker to jump to it</span></div>
<div id="tokens"></div>
<div id="tip" hidden></div>
<script id="data" type="application/json">{script_json(data)}</script>
<script>{asset("trace.js")}</script>
</body></html>
"""


def _cell(value: object, text: str | None = None, cls: str = "") -> str:
    value = finite(value)
    v = "" if value is None else html.escape(str(value), quote=True)
    shown = html.escape(text if text is not None else ("" if value is None else str(value)))
    return f'<td{f" class={chr(34)}{cls}{chr(34)}" if cls else ""} data-v="{v}">{shown}</td>'


def _status(is_correct: bool | None) -> str:
    return "correct" if is_correct is True else ("failed" if is_correct is False else "ungradable")


def index_page(rows: list[dict], hrefs: dict[str, str], title: str = "cliffdata report",
               compare: dict[str, str] | None = None) -> str:
    """The index: one row per trace (`data.index_row`), sortable and filterable in the browser. Rows of a
    study carry `model` (a model column and filter) and `key` (their href's key); `compare` maps a problem
    to its page comparing the models' curves (a compare column)."""
    datasets = sorted({r["dataset"] for r in rows})
    models = list(dict.fromkeys(r["model"] for r in rows if "model" in r))
    compare = compare or {}
    # p[−1], the empty prefix's potential: a column only where some trace has it (the fork search scores
    # the empty prefix only when token 0 is a fork, so in that mode the column would be blank)
    with_empty = any(r["p_empty"] is not None for r in rows)
    body = []
    for r in rows:
        status = _status(r["is_correct"])
        cat = r["first_category"]
        href = hrefs[r.get("key", r["trace_id"])]
        link = f'<a href="{html.escape(href, quote=True)}">{html.escape(r["trace_id"])}</a>'
        question = r["question"] if len(r["question"]) <= 160 else r["question"][:157] + "…"
        model_attr = f' data-model="{html.escape(r["model"], quote=True)}"' if models else ""
        cmp = compare.get(r["problem_id"])
        extra = (_cell(r["model"]) + (f'<td data-v="1"><a class="cmp" href="{html.escape(cmp, quote=True)}">compare</a></td>'
                                      if cmp else _cell(None))) if models else ""
        body.append(
            f'<tr data-dataset="{html.escape(r["dataset"], quote=True)}" data-correct="{status}"{model_attr} '
            f'data-cats="{html.escape(" ".join(r["categories"]), quote=True)}">'
            f'<td data-v="{html.escape(r["trace_id"], quote=True)}">{link}</td>'
            + extra + _cell(r["dataset"]) + _cell(r["question"], question, "q")
            + f'<td data-v="{status}"><span class="badge {status}">{status}</span></td>'
            + _cell(r["num_tokens"], cls="num") + _cell(r["num_cliffs"], cls="num")
            + (f'<td data-v="{html.escape(cat, quote=True)}"><span class="cat {html.escape(cat, quote=True)}"></span>'
               f'{html.escape(cat.replace("_", "-"))}</td>' if cat else _cell(None))
            + _cell(r["first_index"], cls="num") + _cell(r["critical_index"], cls="num")
            + (_cell(None if r["p_empty"] is None else round(r["p_empty"], 3), cls="num") if with_empty else "")
            + "</tr>")
    num_correct = sum(r["is_correct"] is True for r in rows)
    num_failed = sum(r["is_correct"] is False for r in rows)
    with_cliff = sum(r["num_cliffs"] > 0 for r in rows)
    options = "".join(f'<option value="{html.escape(d, quote=True)}">{html.escape(d)}</option>' for d in datasets)
    cats = "".join(f'<option value="{c}">{c.replace("_", "-")}</option>' for c in CATEGORIES)
    model_options = "".join(f'<option value="{html.escape(m, quote=True)}">{html.escape(m)}</option>' for m in models)
    model_filter = (f'<label>model <select id="f-model"><option value="">all</option>{model_options}</select></label>\n'
                    if models else "")
    columns = [("trace", "str")] + ([("model", "str"), ("side by side", "num")] if models else [])
    columns += [("dataset", "str"), ("problem", "str"), ("result", "str"), ("tokens", "num"),
               ("cliffs", "num"), ("first-cliff category", "str"), ("first cliff at", "num"),
               ("critical token", "num")] + ([("p[−1]", "num")] if with_empty else [])
    head = "".join(f'<th data-type="{t}">{html.escape(n)}</th>' for n, t in columns)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title><style>{asset("style.css")}</style></head>
<body>
<h1>{html.escape(title)}</h1>
<div class="summary"><span><b>{len(rows)}</b>traces</span><span><b>{num_correct}</b>correct</span>
<span><b>{num_failed}</b>failed</span><span><b>{with_cliff}</b>with a cliff</span>
<span><b>{sum(r["num_cliffs"] for r in rows)}</b>cliffs</span></div>
<p class="muted">Cliff at token i: the potential drops from p[i−1] to p[i] by the protocol's test. Click a header to sort{
"; p[−1] is the empty prefix's potential (the problem's difficulty)" if with_empty else ""}.</p>
<div id="filters">
{model_filter}<label>dataset <select id="f-dataset"><option value="">all</option>{options}</select></label>
<label>result <select id="f-correct"><option value="">all</option><option value="correct">correct</option>
<option value="failed">failed</option><option value="ungradable">ungradable</option></select></label>
<label>cliff category <select id="f-category"><option value="">all</option><option value="any">any cliff</option>
<option value="none">no cliff</option>{cats}</select></label>
<label>search <input id="f-text" type="search" placeholder="trace or problem text"></label>
<span id="shown" class="muted"></span></div>
<table class="traces" id="traces"><thead><tr>{head}</tr></thead>
<tbody>
{chr(10).join(body)}
</tbody></table>
<script>{asset("index.js")}</script>
</body></html>
"""


def compare_page(payload: dict) -> str:
    """One problem's traces by several models: their potential curves (evaluated positions) on one plot,
    cliff markers, and a legend linking each trace's page (`assets/compare.js`)."""
    title = html.escape(f"{payload['problem_id']}: the models side by side")
    return _subpage_head(title) + f"""<div id="question"></div>
<figure><svg id="plot" role="img" aria-label="potential curves of the models"></svg><figcaption id="legend"></figcaption></figure>
<table class="traces" id="models"><thead><tr><th>model</th><th>trace</th><th>result</th><th>tokens</th><th>cliffs</th>
</tr></thead><tbody></tbody></table>
<script id="data" type="application/json">{script_json(payload)}</script>
<script>{asset("compare.js")}</script>
</body></html>
"""
