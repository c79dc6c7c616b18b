"""Stage `summary`: metrics/summary.md, the headline numbers of every stage beside the paper's reference
numbers (protocol §8), labelled as a different model and dataset, and the noise audit
(metrics/directions.json: the paper's directions on all / feasible / replicated cliffs).

    python pipeline/summary.py
"""
import json
from pathlib import Path

from cliffdata.analysis import duck
from cliffdata.analysis.summary import headline, load_metrics, render_summary
from cliffdata.config.load import load_params


def main() -> None:
    params = load_params()
    model = f"{params.model.name} (embedded)" if params.model.source == "embedded" else params.model.source
    datasets = ", ".join(sorted({s.dataset for s in params.problems.sources}))
    # the paper's directions on all / feasible / replicated cliffs (SQL over the experiments' data)
    needs = ["cliffs", "replicate", "ablation", "candidates"]
    con = duck.connect(Path("."), needs)
    directions = ("{}\n" if duck.views(con) != set(needs) else
                  duck.table_files(duck.run_sql_file(con, "directions", {}), "cliff_set")["json"])
    Path("metrics/directions.json").write_text(directions)
    metrics = load_metrics(Path("metrics"))
    text = render_summary(metrics, model, datasets)
    Path("metrics/headline.json").write_text(json.dumps(headline(metrics), indent=2) + "\n")
    Path("metrics/summary.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
