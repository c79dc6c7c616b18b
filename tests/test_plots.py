"""`make plots`: `dvc plots show` with the offline template draws every plot of dvc.yaml in headless
Chromium with the network off, and a plot without data is caught.

On the embedded run some plots are empty by the data (no cliff in a correct trace: pass@k on correct
traces; no deterministic cliff). The test fills empty cells so that a blank plot means a broken plot
definition (a wrong field, a template that cannot draw the field's type), which is what it catches.

    python tests/test_plots.py docs/img        # the README screenshot (docs/img/plots_offline.png)
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cliffdata.publish.plots import offline_template  # noqa: E402
from test_report_browser import chromium_driver  # noqa: E402

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
DVC = str(Path(sys.executable).with_name("dvc"))

# Before the page's scripts run: every vegaEmbed call renders SVG and keeps its promise, so the test can
# wait for all of them and count the marks each plot drew.
TRAP = """
window.__embeds = [];
var real;
Object.defineProperty(window, "vegaEmbed", {configurable: true,
  get: function () { return real && function (el, spec, opt) {
    var p = real(el, spec, Object.assign({}, opt || {}, {renderer: "svg"}));
    window.__embeds.push(p.then(function () { return "ok"; }, function (e) { return "error: " + e; }));
    return p; }; },
  set: function (v) { real = v; }});
"""
# per plot div: the number of drawn mark elements (paths / symbols / rects with geometry)
COUNT_MARKS = """
return Array.prototype.map.call(document.querySelectorAll("body > div[id]"), function (div) {
  var marks = div.querySelectorAll("g.role-mark.mark-line path, g.role-mark.mark-symbol path, " +
                                   "g.role-mark.mark-rect path, g.role-mark.mark-area path");
  return [div.id, Array.prototype.filter.call(marks, function (m) { return (m.getAttribute("d") || "").length > 2; }).length];
});
"""


def plots_project(tmp: Path, blank: str | None = None, fill: bool = True) -> Path:
    """A DVC project with dvc.yaml's top-level plots and the plot files `dvc repro` writes (the git-tracked
    CSVs, with empty cells filled so that every configured field has data: a blank plot is then a
    config error; the report's potential curves made up); `blank` empties one file (header only)."""
    proj = tmp / "proj"
    proj.mkdir()
    plots = yaml.safe_load((ROOT / "dvc.yaml").read_text())["plots"]
    (proj / "dvc.yaml").write_text(yaml.safe_dump({"plots": plots}, sort_keys=False))
    shutil.copytree(ROOT / "plots", proj / "plots", ignore=shutil.ignore_patterns("html"))
    for path in (proj / "plots").rglob("*.csv") if fill else ():
        lines = path.read_text().splitlines()
        if len(lines) == 1:                                      # e.g. a Cliff-DPO variant without pairs
            width = len(lines[0].split(","))
            lines += [",".join([str(step)] + ["0.5"] * (width - 1)) for step in (1, 2, 3)]
        lines = [lines[0]] + [",".join(c if c != "" else "0.25" for c in line.split(",")) for line in lines[1:]]
        path.write_text("\n".join(lines) + "\n")
    curves = proj / "reports/potentials"
    curves.mkdir(parents=True)
    for name, drop_at in (("a.csv", 5), ("b.csv", 9)):
        rows = ["token_index,potential,wilson_low,wilson_high,num_rollouts"]
        rows += [f"{i},{0.8 if i < drop_at else 0.1},0,1,16" for i in range(-1, 12)]
        (curves / name).write_text("\n".join(rows) + "\n")
    if blank:
        path = proj / blank
        path.write_text(path.read_text().splitlines()[0] + "\n")
    subprocess.run([DVC, "init", "--no-scm", "-q"], cwd=proj, check=True)
    (proj / "offline.html").write_text(offline_template(), encoding="utf-8")
    done = subprocess.run([DVC, "plots", "show", "--html-template", "offline.html", "-o", "out"], cwd=proj,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return proj / "out" / "index.html"


def render(driver, page: Path) -> list[list]:
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.emulateNetworkConditions",
                           {"offline": True, "latency": 0, "downloadThroughput": 0, "uploadThroughput": 0})
    driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": TRAP})
    driver.get(page.as_uri())
    results = driver.execute_async_script(
        "var done = arguments[0]; Promise.all(window.__embeds).then(done, function (e) { done(['error', String(e)]); });")
    assert results and all(r == "ok" for r in results), results
    time.sleep(0.2)
    return driver.execute_script(COUNT_MARKS)


@pytest.fixture(scope="module")
def driver():
    d = chromium_driver()
    yield d
    d.quit()


def test_template_loads_nothing_from_the_network():
    page = offline_template()
    assert "{plot_divs}" in page and "{scripts}" not in page
    assert "<script src" not in page and "cdn.jsdelivr" not in page
    assert page.count("</script>") == 1                          # the bundle cannot close its own element


def test_every_configured_plot_draws_offline(tmp_path, driver):
    page = plots_project(tmp_path)
    html = page.read_text()
    assert "cdn.jsdelivr" not in html and "<script src" not in html
    drawn = render(driver, page)
    configured = yaml.safe_load((ROOT / "dvc.yaml").read_text())["plots"]
    # one div per top-level plot, the reports/potentials folder one per file (2 here)
    assert len(drawn) == len(configured) - 1 + 2
    assert [d for d in drawn if d[1] == 0] == [], f"blank plots: {drawn}"
    assert not [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def test_a_blank_plot_is_caught(tmp_path, driver):
    drawn = dict(map(tuple, render(driver, plots_project(tmp_path, blank="plots/cpm.csv"))))
    assert drawn["cpm_by_category"] == 0 and drawn["cpm_shift"] > 0


if __name__ == "__main__":
    import tempfile

    out = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/img")
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        page = plots_project(Path(tmp), fill=False)           # the committed run's own plot files
        d = chromium_driver()
        try:
            d.set_window_size(1400, 1000)
            print(render(d, page))
            height = d.execute_script("return document.body.scrollHeight")
            d.set_window_size(1400, min(height + 40, 6000))
            d.save_screenshot(str(out / "plots_offline.png"))
        finally:
            d.quit()
    print(f"wrote {out / 'plots_offline.png'}")
