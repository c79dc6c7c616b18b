"""Stage `report`: the static trace explorer under reports/ (index + one page per trace).

    python pipeline/report.py

Reads every dataset the report draws (ablation and candidates included: the pipeline always makes
them) and models/base for the tokenizer, and the same of every study model under study/<name>/; writes reports/ (the site, and reports/potentials/*.csv for
`dvc plots`) and metrics/report.json (page count and the largest page's size).
"""
import json
import logging
from pathlib import Path

from cliffdata.config.load import load_params
from cliffdata.publish.report import build_report, load_report_data, study_sites
from cliffdata.publish.report.tokenizer import load_tokenizer


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    params = load_params()
    cfg = params.report
    data = load_report_data(Path("."), params.cliffs)
    model, others = study_sites(Path("."), params)          # a study's other models: under study/<name>/
    summary = build_report(data, load_tokenizer("models/base"), "reports", cfg.level, cfg.title,
                           cfg.plot_traces, cfg.num_plot_traces, model, others)
    Path("metrics").mkdir(exist_ok=True)
    Path("metrics/report.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
