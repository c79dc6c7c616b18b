"""Size and load time of the largest report page: a synthetic 8,000-token trace, SmolLM2 tokenizer.

    python bench/report_page.py [--tokens 8000] [--json bench/results/report_page.json]

Builds the report for one synthetic trace (math-like text tokenized by the embedded model's 49k BPE
tokenizer, one cliff, every position at N = 16 for `exhaustive`, a grid for `adaptive`) with the
test fixture's datasets, then opens the page in headless Chromium three times: the first load is a
cold browser, the others warm. "drawn" = until the 8,000 token spans exist (the page's JS has run).
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from transformers import AutoTokenizer  # noqa: E402

from cliffdata.config.load import load_params  # noqa: E402
from cliffdata.model import embedded_gguf_path  # noqa: E402
from cliffdata.publish.report import build_report, load_report_data  # noqa: E402
from report_fixtures import write_fixture  # noqa: E402
from test_report_browser import chromium_driver  # noqa: E402

CLIFFS = load_params(ROOT / "params.yaml").cliffs      # the pipeline's cliffs section: the fixture's cliff test
SENTENCES = ("Let me compute the total number of apples. First, 31 + 28 = 59, and then we multiply by 4 to get 236. "
             "Wait, the problem says each box holds 12 apples, so 236 / 12 = 19.67, which is not an integer. "
             "Let's re-read: there are 7 boxes with 13 apples each, 7 * 13 = 91.\n")


class FixedIds:
    """The fixture encodes the response text; this hands it exactly the ids we cut."""

    def __init__(self, tokenizer, ids: list[int]):
        self.tokenizer, self.ids = tokenizer, ids

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return self.ids

    def __len__(self) -> int:
        return len(self.tokenizer)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=8000)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    gguf = embedded_gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    rng, words, text = random.Random(0), SENTENCES.split(" "), ""
    while len(tokenizer.encode(text, add_special_tokens=False)) < args.tokens:
        text += " ".join(rng.choice(words) for _ in range(200)) + " "
    ids = tokenizer.encode(text, add_special_tokens=False)[:args.tokens]
    results = {}
    for mode in ("exhaustive", "adaptive"):
        root = Path(tempfile.mkdtemp())
        write_fixture(root, FixedIds(tokenizer, ids), {"gsm1k/long-0#0": (tokenizer.decode(ids), False, args.tokens * 5 // 8)},
                      mode=mode)
        started = time.perf_counter()
        summary = build_report(load_report_data(root, CLIFFS), tokenizer, root / "reports")
        build = time.perf_counter() - started
        driver, loads = chromium_driver(), []
        try:
            for _ in range(3):
                started = time.perf_counter()
                driver.get((root / "reports" / summary["largest_page"]).as_uri())
                spans = driver.execute_script("return document.querySelectorAll('#tokens span').length")
                loads.append(round(time.perf_counter() - started, 3))
                assert spans == args.tokens, spans
                assert driver.get_log("browser") == []
        finally:
            driver.quit()
        results[mode] = {"tokens": args.tokens, "page_bytes": summary["largest_page_bytes"],
                         "build_seconds": round(build, 2), "drawn_seconds": loads}
        print(f"{mode}: {summary['largest_page_bytes']:,} bytes, built in {build:.2f} s, drawn in "
              f"{loads[0]:.2f} s (cold browser), {loads[1]:.2f} / {loads[2]:.2f} s (warm)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
