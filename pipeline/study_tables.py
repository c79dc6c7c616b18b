"""Stage `study_tables`: the study's tables by model family and size (protocol §5, RQ3), by SQL over every
model's own datasets (cliffdata/analysis/sql/study_*.sql on the `study.<dataset>` views, cliffdata/study.py).

    python pipeline/study_tables.py

Writes metrics/study.json (one section per table, rows keyed by model, model/correctness or
direction/category) and metrics/study.md (the four tables): occurrence, taxonomy shares, CPM by category,
and ΔCPM by direction (from study_cpm_shift).
"""
import json
import logging
from pathlib import Path

from cliffdata.analysis import duck
from cliffdata.config.load import load_params
from cliffdata.study import members

# (section, SQL file, the columns that key a row in metrics/study.json)
TABLES = (("occurrence", "study_occurrence", ("model", "correctness")),
          ("taxonomy", "study_taxonomy", ("model",)),
          ("cpm", "study_cpm", ("model",)),
          ("cpm_shift", "study_cpm_shift", ("direction", "category")))
TITLES = {"occurrence": "Cliff occurrence by model", "taxonomy": "Cliff taxonomy by model",
          "cpm": "Cliff probability mass by model and category",
          "cpm_shift": "ΔCPM by direction (the source's cliffs read by the eval model)"}


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    params = load_params()
    study = members(params)
    con = duck.connect(Path("."), ["study_cpm_shift"], params.analysis)
    duck.create_study_views(con, study)
    sql_params = {"include_empty_prefix": params.cliffs.include_empty_prefix}
    record, md = {"models": [m.name for m in study]}, ["# The study: tables by model family and size", ""]
    for section, sql, key in TABLES:
        table = duck.run_sql_file(con, sql, sql_params if "$include_empty_prefix" in duck.read_sql(sql) else {})
        rows = [{c: round(v, duck.NUM_DIGITS) if isinstance(v, float) else v for c, v in r.items()}
                for r in table.to_pylist()]
        record[section] = {"/".join(str(r[k]) for k in key): {c: v for c, v in r.items() if c not in key}
                           for r in rows}
        md += [f"## {TITLES[section]}", "",
               duck.format_markdown(table.column_names, [list(r.values()) for r in rows]).rstrip("\n"), ""]
        if not rows:
            md += ["(no rows)", ""]
    Path("metrics").mkdir(exist_ok=True)
    Path("metrics/study.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    Path("metrics/study.md").write_text("\n".join(md).rstrip("\n") + "\n")
    print(json.dumps({"models": record["models"], **{s: len(record[s]) for s, _, _ in TABLES}}))


if __name__ == "__main__":
    main()
