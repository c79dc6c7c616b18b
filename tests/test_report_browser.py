"""The report in a real headless Chromium (Debian `chromium` + `chromium-driver`, installed by
`make test`): the index sorts and filters, a trace page draws the curve, the band and the cliff
markers, token hover shows the details, the JS Wilson band equals `stats.wilson_interval`, no console
errors; screenshots go to the test's temp dir.

    python tests/test_report_browser.py docs/img     # the README screenshots, from the same fixture
"""
from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cliffdata.cliffs.stats import wilson_interval  # noqa: E402
from cliffdata.publish.report import build_report, load_report_data  # noqa: E402
from cliffdata.publish.report.pages import page_name  # noqa: E402
from report_fixtures import CLIFFS, long_text, write_fixture  # noqa: E402

pytestmark = pytest.mark.slow

WORD1 = "Tom has 31 marbles and gets 28 more, so 31 - 28 = 3 marbles.\n#### 3"
TEXTS = {
    "arith/word1-3#0": (WORD1, False, WORD1.index("= 3") + 2),          # the cliff: the digit after "="
    "arith/word1-4#0": ("Emma has 20 stickers and gets 23 more, so 20 + 23 = 43.\n#### 43", True, None),
    "arith/add2-1#0": ("23 + 48 = 61.\n#### 61", False, 6),
    "gsm1k/17#0": (long_text(8000), False, 5000),
}
LONG = "gsm1k/17#0"
QUESTIONS = {"arith/word1-3": "Tom has 31 marbles. Tom gets 28 more marbles. How many marbles does Tom have now?",
             "arith/word1-4": "Emma has 20 stickers. Emma gets 23 more stickers. How many stickers does Emma have now?",
             "arith/add2-1": "What is 23 + 48?", "gsm1k/17": "A synthetic 8,000-token trace."}


def chromium_driver():
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not binary or not driver_path:
        pytest.skip("chromium / chromedriver not installed (make test installs them with apt where it can)")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900",
                "--allow-file-access-from-files"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(driver_path), options=options)


def build_site(root: Path, tokenizer) -> Path:
    write_fixture(root, tokenizer, TEXTS, mode="adaptive", questions=QUESTIONS, sweep=True)
    build_report(load_report_data(root, CLIFFS), tokenizer, root / "reports", title="cliffdata report (fixture)")
    return root / "reports"


def errors(driver) -> list[dict]:
    return [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]


@pytest.fixture(scope="module")
def driver():
    d = chromium_driver()
    yield d
    d.quit()


def test_index_and_trace_page_render(tmp_path, tiny_tokenizer, driver):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    site = build_site(tmp_path, tiny_tokenizer)
    driver.get((site / "index.html").as_uri())
    rows = driver.find_elements(By.CSS_SELECTOR, "#traces tbody tr")
    assert len(rows) == 4
    assert driver.find_element(By.ID, "shown").text == "4 of 4 traces"
    Select(driver.find_element(By.ID, "f-category")).select_by_value("none")
    assert driver.find_element(By.ID, "shown").text == "1 of 4 traces"
    Select(driver.find_element(By.ID, "f-category")).select_by_value("")
    Select(driver.find_element(By.ID, "f-dataset")).select_by_value("gsm1k")
    assert driver.find_element(By.ID, "shown").text == "1 of 4 traces"
    Select(driver.find_element(By.ID, "f-dataset")).select_by_value("")
    tokens_header = driver.find_elements(By.CSS_SELECTOR, "#traces th")[4]
    tokens_header.click()                                    # ascending by number of tokens
    first = [r.find_elements(By.TAG_NAME, "td")[4].text for r in driver.find_elements(By.CSS_SELECTOR, "#traces tbody tr")]
    assert [int(x) for x in first] == sorted(int(x) for x in first)
    driver.save_screenshot(str(tmp_path / "index.png"))
    assert errors(driver) == []

    driver.find_element(By.LINK_TEXT, "arith/word1-3#0").click()
    assert driver.title.startswith("arith/word1-3#0")
    # the curve joins adjacent tested positions only: every 5th position is tested here, so each stretch
    # between two is a gap, drawn as the sampler identity's band (Σ max_drop), never as a line across it
    curves = [c.get_attribute("d") for c in driver.find_elements(By.CSS_SELECTOR, "#plot path.curve")]
    drifts = driver.find_elements(By.CSS_SELECTOR, "#plot path.drift")
    assert len(drifts) > 5 and all(d.get_attribute("d").endswith("Z") for d in drifts)
    assert "not evaluated" in driver.find_element(By.ID, "legend").text
    assert driver.find_element(By.CSS_SELECTOR, "#plot path.band").get_attribute("d").endswith("Z")
    assert driver.find_element(By.ID, "evaluated").get_attribute("d").count("M") > 5        # adaptive positions
    # 2-rollout screening points are drawn apart (hollow, titled) and never joined into the line
    screens = driver.find_elements(By.CSS_SELECTOR, "#plot circle.screen")
    points = driver.find_elements(By.CSS_SELECTOR, "#plot circle.pt")
    assert len(screens) > 5 and len(points) > 5
    line_xs = {p.split(",")[0] for d in curves for p in d[1:].split("L")}
    assert not {c.get_attribute("cx") for c in screens} & line_xs
    assert sum(d.count("L") for d in curves) == len(points) - 1 - len(drifts)      # a segment per stretch
    assert "screening point" in driver.find_element(By.ID, "legend").text
    assert "p[−1] (empty prefix)" in driver.find_element(By.ID, "meta").text and "/16)" in driver.find_element(By.ID, "meta").text
    # no token is coloured from a screening point: only adjacent tested positions carry a drop colour
    coloured = driver.execute_script(
        "return Array.prototype.filter.call(document.querySelectorAll('#tokens span'), "
        "function (s) { return s.style.backgroundColor !== ''; }).length")
    assert coloured <= 2
    (marker,) = driver.find_elements(By.CSS_SELECTOR, "#plot circle.cliff")
    assert marker.get_attribute("fill") == "#d62728"                                   # sampled-off
    assert driver.find_elements(By.ID, "critical") == [] or driver.find_element(By.ID, "critical").is_displayed()
    # hover the cliff token: the details panel shows its stats, alternatives and pass@k
    cliff_token = driver.find_element(By.CSS_SELECTOR, "#tokens span.cl")
    ActionChains(driver).move_to_element(cliff_token).perform()
    tip = driver.find_element(By.ID, "tip")
    assert tip.is_displayed()
    for text in (f"token {TEXTS['arith/word1-3#0'][2]}", "logprob", "rank", "entropy", "greedy", "sampled-off", "alternative", "pass@k", "del", "keep",
                 "evidence", "p = ", "feasible yes", "replicated"):
        assert text in tip.text, text
    # the JS band is the Wilson interval of stats.py
    for k, n in ((0, 16), (3, 16), (14, 16), (1, 2)):
        js = driver.execute_script(f"return window.cliffReport.wilson({k}, {n});")
        assert js == pytest.approx(list(wilson_interval(k, n, 1.959964)), abs=1e-5)
    # tap (click) pins the details; a click elsewhere unpins them
    cliff_token.click()
    assert "pinned" in tip.get_attribute("class") and tip.is_displayed()
    driver.find_element(By.TAG_NAME, "h1").click()
    assert "pinned" not in tip.get_attribute("class") and not tip.is_displayed()
    # a click on the cliff marker jumps to (and pins) its token
    marker.click()
    assert "pinned" in tip.get_attribute("class") and "alternative" in tip.text
    driver.find_element(By.TAG_NAME, "h1").click()
    driver.find_element(By.CSS_SELECTOR, "input[value=entropy]").click()
    assert "entropy" in driver.find_element(By.ID, "scale-label").text
    driver.save_screenshot(str(tmp_path / "trace.png"))
    assert errors(driver) == []

    # the 8,000-token page: load time to a fully drawn page
    page = site / "traces" / page_name(LONG)
    started = time.perf_counter()
    driver.get(page.as_uri())
    assert driver.execute_script("return document.querySelectorAll('#tokens span').length") == 8000
    seconds = time.perf_counter() - started
    timing = driver.execute_script("var t = performance.getEntriesByType('navigation')[0]; return t.loadEventEnd;")
    print(f"8,000-token page: {page.stat().st_size} bytes, load event {timing:.0f} ms, drawn in {seconds:.2f} s")
    assert seconds < 10
    assert errors(driver) == []


# Hostile strings through every field the pages show. Each tries to run script (a counter on
# window), to end the data <script> element, or to blank the page with an unterminated comment.
XSS = "window.__xss=(window.__xss||0)+1"
HOSTILE = {
    "dataset": f'd"><img src=x onerror="{XSS}">',
    "question": f"Q </script><script>{XSS}</script><!--<script> <b>bold?</b>",
    "answer": f"<img src=x onerror='{XSS}'>",
    "category": f'sampled_off"><img src=x onerror="{XSS}"><!--',
    "text": "1 <!--<script> x </script> 2 <img src=x onerror=a()>\n#### 3",
}


def build_hostile_site(root: Path) -> tuple[Path, str, object]:
    import pyarrow.parquet as pq

    from cliffdata import schema
    from conftest import build_tokenizer

    tokenizer = build_tokenizer("<>\"'&;!`[]{}@%^_|~")
    trace_id = HOSTILE["dataset"] + "/p<!--<script>#0"
    write_fixture(root, tokenizer, {trace_id: (HOSTILE["text"], False, 6)},
                  questions={trace_id.split("#")[0]: HOSTILE["question"]})
    for name, column in (("problems", "answer"), ("traces", "extracted_answer"), ("cliffs", "category"),
                         ("potentials", "mode")):
        table = pq.read_table(root / schema.PATHS[name]).to_pylist()
        for row in table:
            row[column] = HOSTILE["category"] if column in ("category", "mode") else HOSTILE["answer"]
        schema.write(name, table, root / schema.PATHS[name])
    build_report(load_report_data(root, CLIFFS), tokenizer, root / "reports", title=f"report {HOSTILE['question']}")
    return root / "reports", trace_id, tokenizer


def test_hostile_strings_are_shown_not_run(tmp_path, driver):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    site, trace_id, _ = build_hostile_site(tmp_path)
    driver.get((site / "index.html").as_uri())
    assert driver.execute_script("return window.__xss") is None
    assert driver.find_elements(By.TAG_NAME, "img") == []
    assert driver.find_element(By.TAG_NAME, "h1").text == f"report {HOSTILE['question']}"
    row = driver.find_element(By.CSS_SELECTOR, "#traces tbody tr")
    assert HOSTILE["dataset"] in row.text and trace_id in row.text
    assert driver.find_element(By.ID, "shown").text == "1 of 1 traces"          # the filters still run

    driver.find_element(By.CSS_SELECTOR, "#traces tbody tr a").click()
    assert driver.find_element(By.TAG_NAME, "h1").text == trace_id
    assert driver.find_element(By.ID, "question").text == HOSTILE["question"]
    tokens = driver.find_elements(By.CSS_SELECTOR, "#tokens span")
    assert "".join(t.get_attribute("textContent") for t in tokens) == HOSTILE["text"].replace("\\n", "\n")
    meta = driver.find_element(By.ID, "meta").text
    assert HOSTILE["answer"] in meta                                             # gold and extracted, as text
    cliff_token = driver.find_element(By.CSS_SELECTOR, "#tokens span.cl")
    ActionChains(driver).move_to_element(cliff_token).perform()
    tip = driver.find_element(By.ID, "tip")
    assert tip.is_displayed() and "sampled-off\"><img" in tip.text           # the category, shown as text
    driver.find_element(By.CSS_SELECTOR, "#plot circle.cliff").click()
    assert driver.execute_script("return window.__xss") is None
    assert driver.find_elements(By.TAG_NAME, "img") == []
    assert [e for e in errors(driver) if "__xss" in e["message"] or "a is not defined" in e["message"]] == []


if __name__ == "__main__":
    # README screenshots: python tests/test_report_browser.py docs/img
    import tempfile

    from conftest import build_tokenizer

    out = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/img")
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        site = build_site(Path(tmp), build_tokenizer())
        d = chromium_driver()
        try:
            d.set_window_size(1200, 640)
            d.get((site / "index.html").as_uri())
            d.save_screenshot(str(out / "report_index.png"))
            d.set_window_size(1200, 1000)
            d.get((site / "traces" / page_name("arith/word1-3#0")).as_uri())
            from selenium.webdriver.common.action_chains import ActionChains
            from selenium.webdriver.common.by import By
            ActionChains(d).move_to_element(d.find_element(By.CSS_SELECTOR, "#tokens span.cl")).perform()
            d.save_screenshot(str(out / "report_trace.png"))
        finally:
            d.quit()
    print(f"wrote {out / 'report_index.png'} and {out / 'report_trace.png'}")


# --- a study's report: filter by model, one problem's curves of two models on one plot -----------------

HOSTILE_MODEL = '<img src=x onerror="window.pwned=1">&amp;"model\''


def build_study_site(root: Path, tokenizer) -> Path:
    """The first model's traces (named HOSTILE_MODEL) and model `b`'s traces of two of the same problems,
    with the cliff elsewhere."""

    write_fixture(root, tokenizer, TEXTS, mode="adaptive", questions=QUESTIONS, sweep=True)
    other = {"arith/word1-3#0": (WORD1, True, None), "arith/add2-1#0": ("23 + 48 = 71.\n#### 71", False, 3)}
    write_fixture(root / "study/b", tokenizer, other, questions=QUESTIONS)
    data_b = load_report_data(root / "study/b", CLIFFS, problems_root=root)
    build_report(load_report_data(root, CLIFFS), tokenizer, root / "reports", title="study report (fixture)",
                 model=HOSTILE_MODEL, others=[("b", data_b, tokenizer)])
    return root / "reports"


def test_study_report_filters_by_model_and_compares_curves(tmp_path, tiny_tokenizer, driver):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    site = build_study_site(tmp_path, tiny_tokenizer)
    driver.get((site / "index.html").as_uri())
    assert driver.find_element(By.ID, "shown").text == "6 of 6 traces"
    models = Select(driver.find_element(By.ID, "f-model"))
    assert [o.text for o in models.options] == ["all", HOSTILE_MODEL, "b"]           # text, never markup
    models.select_by_value("b")
    assert driver.find_element(By.ID, "shown").text == "2 of 6 traces"
    models.select_by_index(1)                                  # HOSTILE_MODEL (by value: selenium builds a CSS selector)
    assert driver.find_element(By.ID, "shown").text == "4 of 6 traces"
    models.select_by_value("")
    links = [a.get_attribute("href") for a in driver.find_elements(By.CSS_SELECTOR, "#traces a.cmp")]
    assert len(links) == 4                                    # two problems x two models link their comparison
    assert driver.execute_script("return window.pwned === undefined")
    assert errors(driver) == []

    driver.get(driver.find_element(By.CSS_SELECTOR, "#traces tr[data-model='b'] a").get_attribute("href"))
    assert driver.title.startswith("b: ")                      # a trace page names its model
    driver.get(links[0])
    curves = driver.find_elements(By.CSS_SELECTOR, "#plot g.model-curve polyline")
    assert len(curves) == 2 and all(c.get_attribute("points").count(",") > 5 for c in curves)
    legend = driver.find_elements(By.CSS_SELECTOR, "#legend .legend-item")
    assert [item.text for item in legend] == [HOSTILE_MODEL, "b"]
    rows = driver.find_elements(By.CSS_SELECTOR, "#models tbody tr")
    assert [r.find_elements(By.TAG_NAME, "td")[0].text for r in rows] == [HOSTILE_MODEL, "b"]
    assert driver.find_element(By.ID, "question").text in QUESTIONS.values()
    assert driver.execute_script("return window.pwned === undefined")
    driver.save_screenshot(str(tmp_path / "compare.png"))
    assert errors(driver) == []
    driver.get(rows[1].find_element(By.TAG_NAME, "a").get_attribute("href"))    # the table links the trace page
    assert driver.title.startswith("b: ")


def test_a_direction_override_in_a_token_moves_no_other_token(tmp_path, driver):
    """Each token is a bidi isolate: a right-to-left override (U+202E) or an Arabic letter inside one token
    leaves every other token where it was, left to right; a NaN entropy shows as missing, not 0."""
    import pyarrow.parquet as pq

    from cliffdata import schema
    from conftest import build_tokenizer
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    tokenizer = build_tokenizer("\u202e\u202b\u0627")
    text = "ab\u202ecd\u202bef\u0627gh\n#### 3"
    write_fixture(tmp_path, tokenizer, {"arith/rtl#0": (text, False, 3)})
    path = tmp_path / schema.PATHS["token_stats"]
    rows = pq.read_table(path).to_pylist()
    for row in rows:
        if row["token_index"] == 0:
            row["entropy"] = float("nan")
    schema.write("token_stats", rows, path)
    build_report(load_report_data(tmp_path, CLIFFS), tokenizer, tmp_path / "reports")
    driver.get((tmp_path / "reports/traces" / page_name("arith/rtl#0")).as_uri())
    spans = driver.find_elements(By.CSS_SELECTOR, "#tokens span")
    assert "".join(s.get_attribute("textContent") for s in spans) == text
    first_line = [s for s in spans if s.get_attribute("textContent") not in ("\n",)][:11]
    xs = [driver.execute_script("return arguments[0].getBoundingClientRect().left", s) for s in first_line]
    visible = [x for s, x in zip(first_line, xs) if s.get_attribute("textContent") not in ("\u202e", "\u202b")]
    assert visible == sorted(visible) and len(set(visible)) == len(visible), xs
    ActionChains(driver).move_to_element(spans[0]).perform()
    assert "entropy – nats" in driver.find_element(By.ID, "tip").text
    assert errors(driver) == []
