"""The trace explorer (cliffdata/publish/report): pages from hand-made datasets, optional inputs, size of an
8,000-token page, self-containment, and the `cliffdata report` command."""
from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from cliffdata import schema
from cliffdata.cli import main
from cliffdata.cliffs.stats import cliff_p_value, pass_at_k
from cliffdata.publish.report import build_report, load_report_data
from cliffdata.publish.report.data import pass_at_ks, token_texts
from cliffdata.publish.report.pages import page_name, script_json
from report_fixtures import CLIFFS, long_text, write_fixture

ROOT = Path(__file__).resolve().parents[1]
TEXTS = {
    "arith/a-0#0": ("Tom has 31 marbles and gets 28 more, so 31 - 28 = 3.\n#### 3", False, 24),
    "arith/a-1#0": ("23 + 48 = 71.\n#### 71", True, None),
    "gsm1k/b-2#0": ("5 + 5 = 11.\n#### 11", None, 0),
}


def page_data(page: str) -> dict:
    m = re.search(r'<script id="data" type="application/json">(.*?)</script>', page, re.S)
    assert m, "no data block"
    return json.loads(m.group(1))


@pytest.fixture
def root(tmp_path, tiny_tokenizer) -> Path:
    write_fixture(tmp_path, tiny_tokenizer, TEXTS, questions={"gsm1k/b-2": "What is 5 + 5? </script><b>x</b>"})
    return tmp_path


def test_pages_carry_curve_cliffs_and_token_details(root, tiny_tokenizer, tmp_path):
    summary = build_report(load_report_data(root, CLIFFS), tiny_tokenizer, tmp_path / "reports")
    assert summary["num_pages"] == 3
    index = (tmp_path / "reports/index.html").read_text()
    for trace_id, (text, is_correct, cliff_at) in TEXTS.items():
        href = f"traces/{page_name(trace_id)}"
        assert f'href="{href}"' in index
        data = page_data((tmp_path / "reports" / href).read_text())
        ids = tiny_tokenizer.encode(text, add_special_tokens=False)
        assert [data["vocab"][t][1] for t in data["tok"]] == ids
        assert "".join(data["vocab"][t][0] for t in data["tok"]) == text    # tokens rebuild the response
        assert len(data["lp"]) == len(data["rk"]) == len(data["ent"]) == len(ids)
        assert data["pot"]["start"] == -1 and len(data["pot"]["n"]) == len(ids) and set(data["pot"]["n"]) == {16}
        assert "i" not in data["pot"]
        assert data["is_correct"] is is_correct and data["mode"] == "exhaustive"
        if cliff_at is None:
            assert data["cliffs"] == [] and data["greedy"] == {}
            continue
        (cliff,) = data["cliffs"]
        assert (cliff["i"], cliff["cat"], cliff["pp"], cliff["p"], cliff["first"]) == (cliff_at, "sampled_off", 14 / 16, 1 / 16, True)
        greedy = ids[cliff_at] + 1
        assert data["greedy"] == {str(cliff_at): data["vocab"].index([tiny_tokenizer.decode([greedy]), greedy])}
        assert data["rk"][cliff_at] == 2 and data["ent"][cliff_at] == 900    # thousandths
        assert [c[1] for c in cliff["cand"]] == [0.6, 0.3, 0.1]                  # by probability
        assert [data["vocab"][c[0]][1] for c in cliff["cand"]] == [greedy, ids[cliff_at], ids[cliff_at] + 2]
        assert [c[5] for c in cliff["cand"]] == [False, True, False]             # the sampled token is marked
        assert cliff["abl"]["del"]["pass"]["1"] == pytest.approx(12 / 16, abs=1e-4)
        assert cliff["abl"]["keep"]["pass"]["16"] == 1.0
        # the cliff's evidence: p-value, the sampler's bound, feasibility, replication
        assert cliff["pv"] == float(f"{cliff_p_value(14, 16, 1, 16, CLIFFS.test):.3g}") and cliff["md"] == 0.7 and cliff["feas"] is True
        assert set(cliff["rep"]) == {"ok", "kp", "np", "k", "n"} and cliff["rep"]["np"] == 16
    # the index: one row per trace, with its first-cliff category and position
    rows = re.findall(r"<tr data-dataset=\"(\w+)\" data-correct=\"(\w+)\" data-cats=\"([\w ]*)\">", index)
    assert sorted(rows) == [("arith", "correct", ""), ("arith", "failed", "sampled_off"), ("gsm1k", "ungradable", "sampled_off")]
    assert '<td class="num" data-v="24">24</td>' in index


def test_optional_datasets_absent(root, tiny_tokenizer, tmp_path):
    for name in ("ablation", "candidates", "replicate"):
        (root / schema.PATHS[name]).unlink()
    build_report(load_report_data(root, CLIFFS), tiny_tokenizer, tmp_path / "reports")
    data = page_data((tmp_path / "reports/traces" / page_name("arith/a-0#0")).read_text())
    (cliff,) = data["cliffs"]
    assert "cand" not in cliff and "abl" not in cliff and "rep" not in cliff


def test_required_dataset_missing_is_an_error(root):
    (root / schema.PATHS["token_stats"]).unlink()
    with pytest.raises(ValueError, match="token_stats.parquet"):
        load_report_data(root, CLIFFS)


def test_adaptive_positions(tmp_path, tiny_tokenizer):
    write_fixture(tmp_path, tiny_tokenizer, TEXTS, mode="adaptive")
    build_report(load_report_data(tmp_path, CLIFFS), tiny_tokenizer, tmp_path / "reports")
    data = page_data((tmp_path / "reports/traces" / page_name("arith/a-0#0")).read_text())
    assert data["mode"] == "adaptive"
    num_tokens = len(data["tok"])
    assert data["pot"]["i"] == sorted({-1, 23, 24} | set(range(0, num_tokens - 1, 5)))
    assert [c["i"] for c in data["cliffs"]] == [24]
    assert len(data["md"]) == num_tokens and data["md"][24] == 700       # max_drop in thousandths, for the gaps' band


def test_index_shows_the_empty_prefix_only_where_a_trace_has_it():
    from cliffdata.publish.report.pages import index_page

    row = {"trace_id": "t#0", "problem_id": "t", "dataset": "arith", "question": "q", "is_correct": False,
           "num_tokens": 5, "num_cliffs": 0, "has_potentials": True, "first_category": None, "first_index": None,
           "critical_index": None, "categories": [], "p_empty": None}
    assert "p[−1]" not in index_page([row], {"t#0": "traces/t.html"})    # fork mode: no trace scores it
    shown = index_page([row, dict(row, trace_id="u#0", p_empty=0.25)], {"t#0": "a.html", "u#0": "b.html"})
    assert "p[−1]" in shown and shown.count("<td") == 2 * shown.count("<th data-")


def test_page_is_self_contained_and_escaped(root, tiny_tokenizer, tmp_path):
    build_report(load_report_data(root, CLIFFS), tiny_tokenizer, tmp_path / "reports")
    for page in [tmp_path / "reports/index.html", *sorted((tmp_path / "reports/traces").glob("*.html"))]:
        text = page.read_text()
        assert not re.search(r"<(link|img|iframe)\b|\bsrc=|url\(", text), f"{page} references an external resource"
        assert not re.search(r"href=\"(https?:)?//", text), f"{page} links off-site"
        # a question holds "</script><b>x</b>": it must not close a script or inject markup
        assert text.count("</script>") == text.count("<script"), page
        assert "<b>x</b>" not in text
    assert json.loads(script_json({"q": "</script>\u2028"})) == {"q": "</script>\u2028"}


@pytest.mark.parametrize("value", ["<!--<script>", "</script>", "<script>", "a & b > c", "<\u2028>", "</SCRIPT >"])
def test_script_json_has_no_markup(value):
    """`<!--<script>` in inline JSON switches the HTML parser into a state where the next
    `</script>` does not end the element (the page goes blank): no `<`, `>` or `&` is written raw."""
    text = script_json({"tok": value, value: [value]})
    assert not set(text) & set("<>&\u2028\u2029")
    assert json.loads(text) == {"tok": value, value: [value]}


def test_index_escapes_categories(tmp_path, tiny_tokenizer):
    """A cliff category reaches attributes and text of the index escaped."""
    hostile = 'x"><img src=x onerror=alert(1)><!--'
    write_fixture(tmp_path, tiny_tokenizer, TEXTS)
    cliffs = schema.read("cliffs", tmp_path / schema.PATHS["cliffs"]).to_pylist()
    schema.write("cliffs", [{**c, "category": hostile} for c in cliffs], tmp_path / schema.PATHS["cliffs"])
    build_report(load_report_data(tmp_path, CLIFFS), tiny_tokenizer, tmp_path / "reports")
    index = (tmp_path / "reports/index.html").read_text()
    assert "<img" not in index and "<!--" not in index
    assert 'data-cats="x&quot;&gt;&lt;img src=x onerror=alert(1)&gt;&lt;!--"' in index


def test_large_trace_page_is_small(tmp_path, tiny_tokenizer):
    text = long_text(8000)
    write_fixture(tmp_path, tiny_tokenizer, {"arith/long-0#0": (text, False, 5000)}, mode="exhaustive")
    summary = build_report(load_report_data(tmp_path, CLIFFS), tiny_tokenizer, tmp_path / "reports")
    assert summary["largest_page_tokens"] == 8000
    size = summary["largest_page_bytes"]
    assert size == (tmp_path / "reports" / summary["largest_page"]).stat().st_size
    assert size < 200_000, f"an 8,000-token page is {size} bytes"
    print(f"8,000-token page: {size} bytes")


def test_token_texts_keep_context_spaces(tiny_tokenizer):
    ids = tiny_tokenizer.encode("a b\n#### 7", add_special_tokens=False)
    assert "".join(token_texts(tiny_tokenizer, ids)) == "a b\n#### 7"


def test_pass_at_ks_matches_stats():
    assert pass_at_ks(16, 3) == {str(k): round(pass_at_k(16, 3, k), 4) for k in (1, 2, 4, 8, 16)}
    assert list(pass_at_ks(5, 0)) == ["1", "2", "4"]


@pytest.mark.integration
def test_cli_report(root, tiny_tokenizer, tmp_path, monkeypatch, capsys):
    tiny_tokenizer.save_pretrained(root / "models/base")
    params = {"problems": {"sources": [{"dataset": "arith", "families": {"add1": 1}, "prompt": "p"}]},
              "prompts": {"p": {"instruction": ""}}, "report": {"level": 0.9, "title": "my run"},
              "cliffs": {"test": dataclasses.asdict(CLIFFS.test)}}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(root)
    assert main(["report", "--out", str(tmp_path / "site")]) == 0
    assert "3 trace pages" in capsys.readouterr().out
    index = (tmp_path / "site/index.html").read_text()
    assert "<title>my run</title>" in index
    data = page_data((tmp_path / "site/traces" / page_name("arith/a-1#0")).read_text())
    assert data["level"] == 0.9 and data["z"] == pytest.approx(1.644854, abs=1e-6)


@pytest.mark.integration
def test_potential_plots_for_dvc(root, tiny_tokenizer, tmp_path):
    import csv
    import subprocess
    import sys

    from cliffdata.cliffs.stats import wilson_interval

    summary = build_report(load_report_data(root, CLIFFS), tiny_tokenizer, tmp_path / "reports")
    files = sorted((tmp_path / "reports/potentials").glob("*.csv"))
    assert summary["num_plotted_traces"] == 2                          # the traces with a cliff
    assert [f.name for f in files] == sorted(page_name(t).replace(".html", ".csv") for t in ("arith/a-0#0", "gsm1k/b-2#0"))
    rows = list(csv.DictReader(open(tmp_path / "reports/potentials" / page_name("arith/a-0#0").replace(".html", ".csv"))))
    assert rows[0]["token_index"] == "-1" and rows[24]["token_index"] == "23" and float(rows[25]["potential"]) == 1 / 16
    lo, hi = wilson_interval(1, 16, 1.959964)
    assert (float(rows[25]["lower"]), float(rows[25]["upper"])) == pytest.approx((lo, hi), abs=1e-5)

    build_report(load_report_data(root, CLIFFS), tiny_tokenizer, tmp_path / "reports", plots=["arith/a-1#0"])
    assert [f.name for f in (tmp_path / "reports/potentials").glob("*.csv")] == [page_name("arith/a-1#0").replace(".html", ".csv")]
    with pytest.raises(ValueError, match="nope"):
        build_report(load_report_data(root, CLIFFS), tiny_tokenizer, tmp_path / "reports", plots=["nope"])

    # `dvc plots show` reads them through the repository's plot definition
    build_report(load_report_data(root, CLIFFS), tiny_tokenizer, tmp_path / "reports")
    definition = [p for p in yaml.safe_load((Path(__file__).resolve().parents[1] / "dvc.yaml").read_text())["plots"]
                  if "reports/potentials" in p]
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"plots": definition}))
    dvc = str(Path(sys.executable).parent / "dvc")
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([dvc, "init", "-q"], cwd=tmp_path, check=True)
    shown = subprocess.run([dvc, "plots", "show", "--json"], cwd=tmp_path, capture_output=True, text=True, check=True)
    data = json.loads(shown.stdout)["data"]
    assert len(data) == 2 and all(k.startswith("reports/potentials/") for k in data)


def test_trace_without_potentials_or_stats_still_gets_a_page(root, tiny_tokenizer, tmp_path):
    data = load_report_data(root, CLIFFS)
    data.potentials = {t: data.potentials[t] for t in data.potentials if t != "arith/a-1#0"}
    data.token_stats = {t: data.token_stats[t] for t in data.token_stats if t != "arith/a-1#0"}
    build_report(data, tiny_tokenizer, tmp_path / "reports")
    page = page_data((tmp_path / "reports/traces" / page_name("arith/a-1#0")).read_text())
    assert page["pot"] == {"i": [], "n": [], "k": []} and page["lp"] == [] and page["mode"] is None
    assert '<td class="num" data-v=""></td>' in (tmp_path / "reports/index.html").read_text()   # no p[-1]


@pytest.mark.integration
def test_report_never_deletes_what_it_did_not_create(root, tiny_tokenizer, tmp_path, monkeypatch, capsys):
    """`--out` pointed at the repository, data/, or a folder of someone else's files is refused,
    and nothing under it changes; a previous report is replaced whole."""
    tiny_tokenizer.save_pretrained(root / "models/base")
    shutil.copy(ROOT / "params.yaml", root / "params.yaml")        # the cliff test the report reads: the project's
    monkeypatch.chdir(root)
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "notes.txt").write_text("mine")
    before = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    for out in (root, root.parent, root / "data", root / "data/sample", root / "models", theirs):
        assert main(["report", "--root", str(root), "--out", str(out)]) == 2, out
        assert "cliffdata report:" in capsys.readouterr().err
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*")) == before
    assert (theirs / "notes.txt").read_text() == "mine"
    with pytest.raises(ValueError, match="not empty and holds no previous report"):
        build_report(load_report_data(root, CLIFFS), tiny_tokenizer, theirs)
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(ValueError, match="not a folder"):
        build_report(load_report_data(root, CLIFFS), tiny_tokenizer, tmp_path / "a-file")

    # The default is ROOT/reports, not ./reports; a second run replaces its own report.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["report", "--root", str(root)]) == 0
    site = root / "reports"
    assert (site / "index.html").exists() and not (elsewhere / "reports").exists()
    page = next((site / "traces").iterdir())
    page.unlink()
    assert main(["report", "--root", str(root)]) == 0
    assert page.exists() and (site / "index.html").exists()
    assert oct(site.stat().st_mode & 0o777) == "0o755"
    assert not [p for p in root.iterdir() if p.name.startswith(".reports.")], "temporary folders left behind"


def test_failed_report_keeps_the_previous_one(root, tiny_tokenizer, tmp_path, monkeypatch):
    out = tmp_path / "site"
    build_report(load_report_data(root, CLIFFS), tiny_tokenizer, out)
    index = (out / "index.html").read_text()

    def boom(*args, **kwargs):
        raise RuntimeError("killed halfway")

    monkeypatch.setattr("cliffdata.publish.report.index_page", boom)
    with pytest.raises(RuntimeError, match="killed halfway"):
        build_report(load_report_data(root, CLIFFS), tiny_tokenizer, out)
    assert (out / "index.html").read_text() == index
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".site.")) == []


def test_trace_rows_reads_a_trace_at_a_time(tmp_path, monkeypatch):
    """The report reads potentials / token_stats a trace at a time from their row groups (a trace
    may span two), equal to the rows of a full read, from a file or a folder of parts."""
    import pyarrow.parquet as pq

    from cliffdata import schema
    from cliffdata.analysis.synthetic import write_study
    from cliffdata.scan import TraceRows

    monkeypatch.setattr(schema, "ROW_GROUP_ROWS", 1000)
    write_study(tmp_path, rows=8000, seed=4, traces_per_chunk=5)
    path = tmp_path / schema.PATHS["potentials"]
    assert pq.ParquetFile(path).metadata.num_row_groups >= 8
    full = pq.read_table(path).to_pandas()
    rows = TraceRows(path, ["token_index", "potential"])
    ids = sorted(full.trace_id.unique())
    assert rows.trace_ids() == ids and len(rows) == len(ids) and ids[3] in rows and "nope#0" not in rows
    for trace_id in ids:
        want = full[full.trace_id == trace_id][["trace_id", "token_index", "potential"]].reset_index(drop=True)
        assert rows[trace_id].equals(want)
    assert rows.get("nope#0") is None
    parts = tmp_path / "parts" / "potentials.parquet"
    parts.mkdir(parents=True)
    table = pq.read_table(path)
    pq.write_table(table.slice(0, 3500), parts / "part-0.parquet")
    pq.write_table(table.slice(3500), parts / "part-1.parquet")
    assert TraceRows(parts, ["token_index", "potential"])[ids[-1]].equals(rows[ids[-1]])


def test_a_study_report_keeps_the_first_models_pages_and_adds_comparisons(tmp_path, tiny_tokenizer):
    """With other models the first model's trace pages keep their names; each model's trace of
    one problem is listed with its model, and problems traced by two models get a comparison page. Without
    other models the index has no model column, as in the single-model report."""
    from cliffdata.publish.report import build_report, load_report_data
    from cliffdata.publish.report.pages import page_name
    from report_fixtures import write_fixture

    texts = {"arith/add2-1#0": ("23 + 48 = 61.\n#### 61", False, 6), "arith/add2-2#0": ("1 + 1 = 2.\n#### 2", True, None)}
    write_fixture(tmp_path, tiny_tokenizer, texts)
    write_fixture(tmp_path / "study/b", tiny_tokenizer, {"arith/add2-1#0": texts["arith/add2-1#0"]})
    single = build_report(load_report_data(tmp_path, CLIFFS), tiny_tokenizer, tmp_path / "single")
    assert 'id="f-model"' not in (tmp_path / "single/index.html").read_text() and "num_models" not in single
    data_b = load_report_data(tmp_path / "study/b", CLIFFS, problems_root=tmp_path)
    summary = build_report(load_report_data(tmp_path, CLIFFS), tiny_tokenizer, tmp_path / "site", model="a",
                           others=[("b", data_b, tiny_tokenizer)])
    assert summary["num_pages"] == 3 and summary["num_models"] == 2 and summary["num_compare_pages"] == 1
    assert (tmp_path / "site/traces" / page_name("arith/add2-1#0")).read_bytes() != b""
    assert (tmp_path / "site/traces" / page_name("b/arith/add2-1#0")).exists()
    index = (tmp_path / "site/index.html").read_text()
    assert index.count('data-model="b"') == 1 and index.count('data-model="a"') == 2
    assert index.count('class="cmp"') == 2


def test_report_replaces_only_the_files_its_marker_lists(root, tiny_tokenizer, tmp_path):
    """A marker names every file of the report with its sha256: a folder holding a copied or forged marker,
    or a report with a file added or changed since, is refused, naming the file, and left as it was."""
    data = load_report_data(root, CLIFFS)
    forged = tmp_path / "forged"
    forged.mkdir()
    (forged / "thesis.tex").write_text("mine")
    for marker, refusal in (("written by cliffdata report; this folder is replaced by the next report\n",
                             "holds no previous report"), (b"\xff\xfe", "holds no previous report"),
                            ('{"files": {}}', "thesis.tex was not written by it"),
                            ('{"files": {"thesis.tex": "0"}}', "thesis.tex differs from what it wrote")):
        (forged / ".cliffdata-report").write_bytes(marker if isinstance(marker, bytes) else marker.encode())
        with pytest.raises(ValueError, match=refusal):
            build_report(data, tiny_tokenizer, forged)
        assert (forged / "thesis.tex").read_text() == "mine"
    site = tmp_path / "site"
    build_report(data, tiny_tokenizer, site)
    copied = tmp_path / "copied"
    copied.mkdir()
    (copied / "thesis.tex").write_text("mine")
    (copied / ".cliffdata-report").write_bytes((site / ".cliffdata-report").read_bytes())
    with pytest.raises(ValueError, match="thesis.tex was not written by it"):
        build_report(data, tiny_tokenizer, copied)
    (site / "traces" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="notes.txt was not written by it"):
        build_report(data, tiny_tokenizer, site)
    (site / "traces" / "notes.txt").unlink()
    (site / "index.html").write_text("changed")
    with pytest.raises(ValueError, match="index.html differs from what it wrote"):
        build_report(data, tiny_tokenizer, site)
    assert (site / "index.html").read_text() == "changed"
    (site / "index.html").unlink()
    build_report(data, tiny_tokenizer, site)                   # a file removed from a report: still its own
    assert (site / "index.html").exists() and (copied / "thesis.tex").read_text() == "mine"


@pytest.mark.parametrize("trace_id", ["../../etc/passwd#0", "..#0", ".hidden#0", "-rf#0", "/#0", "#0", "\u202e#0",
                                      "a/b\\c#0", "A#0", "a#0", "\ud800#0"])
def test_page_names_are_safe_and_unique(trace_id):
    name = page_name(trace_id)
    assert not name.startswith((".", "-")) and "/" not in name and "\\" not in name, name
    assert re.fullmatch(r"[A-Za-z0-9_.-]+\.html", name), name
    assert page_name(trace_id.upper() + "x") != name


def test_page_names_of_colliding_safe_ids_differ(tiny_tokenizer, tmp_path):
    """Ids that are equal once made filename-safe (or differ only in case) still get pages of their own."""
    ids = ["p/1#0", "p_1#0", "p?1#0", "P/1#0", "../p/1#0"]
    assert len({page_name(t).lower() for t in ids}) == len(ids)
    write_fixture(tmp_path, tiny_tokenizer, {t: ("1 + 1 = 2.\n#### 2", True, None) for t in ids})
    summary = build_report(load_report_data(tmp_path, CLIFFS), tiny_tokenizer, tmp_path / "reports")
    pages = sorted(p.name for p in (tmp_path / "reports/traces").iterdir())
    assert summary["num_pages"] == len(pages) == len(ids) and not [p for p in pages if p.startswith(".")]


def test_nan_and_inf_are_shown_as_missing_and_flagged_by_the_checks(root, tiny_tokenizer, tmp_path):
    """A NaN or infinite float in any dataset is named by the data checks (dataset, key, column, value);
    the explorer still builds and shows the value as missing."""
    from cliffdata.analysis import duck

    for name, column, value in (("potentials", "potential", float("nan")), ("token_stats", "entropy", float("inf")),
                                ("cliffs", "p_prev", float("-inf"))):
        path = root / schema.PATHS[name]
        rows = schema.read(name, path).to_pylist()
        rows[0][column] = value
        schema.write(name, rows, path)
    con = duck.connect(root)
    counts = duck.run_checks(con)
    assert counts["finite_potentials"] == counts["finite_token_stats"] == counts["finite_cliffs"] == 1
    with pytest.raises(ValueError) as failed:
        duck.assert_checks(con)
    for expected in ("finite_potentials", "'potential', 'nan'", "finite_token_stats", "'entropy', 'inf'",
                     "finite_cliffs", "'p_prev', '-inf'", "arith/a-0#0"):
        assert expected in str(failed.value), expected
    summary = build_report(load_report_data(root, CLIFFS), tiny_tokenizer, tmp_path / "reports")
    assert summary["num_pages"] == 3
    pages = [page_data(p.read_text()) for p in (tmp_path / "reports/traces").iterdir()]
    assert any(None in page["ent"] for page in pages)
    assert script_json({"x": [1.5, float("nan"), {"y": float("-inf")}]}) == '{"x":[1.5,null,{"y":null}]}'


def test_finite_checks_pass_on_finite_data_and_nulls(root):
    from cliffdata.analysis import duck

    counts = duck.run_checks(duck.connect(root))
    finite = {name: n for name, n in counts.items() if name.startswith("finite_")}
    assert {"finite_potentials", "finite_token_stats", "finite_cliffs"} <= set(finite) and set(finite.values()) == {0}
