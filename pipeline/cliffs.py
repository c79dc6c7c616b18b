"""Stage `cliffs`: the cliff test between adjacent positions, first cliff, critical token, taxonomy
(a streaming scan of the sorted Parquet files, cliffdata.cliffs.find); then the DuckDB SQL files write
metrics/occurrence.* and metrics/taxonomy.*.

    python pipeline/cliffs.py
"""
import json
import logging

from cliffdata import schema
from cliffdata.analysis import duck
from cliffdata.cliffs.find import SCAN_VERIFIED, cliff_tables
from cliffdata.cliffs.taxonomy import sql_params
from cliffdata.scan import read_columns
from cliffdata.study import stage_params


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    params, _, layout = stage_params("cliffs", doc=__doc__)
    cfg = params.cliffs
    # a streaming scan of the sorted files, `analysis.threads` trace ranges side by side: nothing loads
    # the potentials or the token stats (a file or a folder of parts each)
    # the rollouts stage searches every trace of data/sample: each gets a trace_cliffs row, one that mode
    # forks gave no rollout (no token of it can carry a detectable drop) included
    searched = read_columns(layout.data("traces"), ["trace_id"])["trace_id"].to_pylist()
    cliffs, summaries = cliff_tables(*(layout.data(name) for name in ("traces", "potentials", "token_stats")),
                                     cfg, workers=params.analysis.threads, searched=searched)
    schema.write("cliffs", cliffs, layout.data("cliffs"))
    schema.write("trace_cliffs", summaries, layout.data("trace_cliffs"))
    # only the datasets this stage reads and writes: a later stage's outs may be stale while this one runs
    with duck.connect(layout.root, ["traces", "token_stats", "potentials", "cliffs", "trace_cliffs"], params.analysis) as con:
        duck.assert_checks(con, skip=SCAN_VERIFIED)
    metrics = duck.write_metrics(layout.root, sql_params(cfg), params.analysis)
    print(json.dumps(metrics["occurrence"].get("all", {}), default=str))


if __name__ == "__main__":
    main()
