"""Stage `summary`: metrics/summary.md, the headline numbers of every stage beside the paper's reference
numbers (protocol §8), labelled as a different model and dataset.

    python pipeline/summary.py
"""
from pathlib import Path

from cliffdata.config import load_params
from cliffdata.summary import load_metrics, render_summary


def main() -> None:
    params = load_params()
    model = "SmolLM2-135M-Instruct (embedded)" if params.model.source == "embedded" else params.model.source
    datasets = ", ".join(sorted({s.dataset for s in params.problems.sources}))
    text = render_summary(load_metrics(Path("metrics")), model, datasets)
    Path("metrics/summary.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
