"""Stage `problems`: load or generate the problem set (params section `problems`).

    python pipeline/problems.py

Writes data/problems/problems.parquet and metrics/problems.json (counts and skipped bad rows).
"""
import json
import logging
from pathlib import Path

from cliffdata import schema
from cliffdata.config.load import load_params
from cliffdata.problems import load_problems

METRICS = Path("metrics/problems.json")


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cfg = load_params("params.yaml")
    rows, stats = load_problems(cfg.problems, prompts=cfg.prompts)
    schema.write("problems", rows, schema.PATHS["problems"])
    METRICS.parent.mkdir(parents=True, exist_ok=True)
    # No timestamps or absolute paths: the metrics file is byte-stable for DVC.
    METRICS.write_text(json.dumps(stats, indent=2, sort_keys=True) + "\n")
    datasets = ", ".join(f"{name} {n}" for name, n in stats["num_by_dataset"].items())
    print(f"problems: {stats['num_problems']} problems ({datasets}), {stats['num_skipped']} bad rows skipped "
          f"-> {schema.PATHS['problems']}")


if __name__ == "__main__":
    main()
