"""Stage `entropy`: the entropy x greedy analysis of cliff tokens against every response token of the
traces (protocol §4, §5 RQ2): the 2x2 table with cliff share / baseline share, the cliff greedy ratio
against the baseline rank-1 share, and the entropy histogram (cliff vs baseline). SQL only: it needs
`cliffs`, `trace_cliffs` and `token_stats`, no rollouts, so changing its bins re-runs nothing else.

    python pipeline/entropy.py

Writes metrics/entropy_rank.{json,md} and plots/entropy_hist.csv.
"""
import json
import logging

from cliffdata.analysis import duck
from cliffdata.cliffs.taxonomy import sql_params
from cliffdata.study import stage_params


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    params, _, layout = stage_params("entropy", doc=__doc__)
    cfg = params.entropy
    con = duck.connect(layout.root, ["cliffs", "trace_cliffs", "token_stats"], params.analysis)
    taxonomy = sql_params(params.cliffs)
    entropy_rank = duck.table_files(duck.run_sql_file(con, "entropy_rank", taxonomy), "cell")
    hist = {k: taxonomy[k] for k in ("include_empty_prefix", "use_full_entropy")}
    entropy_hist = duck.table_files(duck.run_sql_file(con, "entropy_hist", {
        **hist, "num_bins": cfg.bins, "max_entropy": cfg.max_entropy}), "bin")
    layout.path("metrics").mkdir(exist_ok=True)
    layout.path("plots").mkdir(exist_ok=True)
    layout.path("metrics/entropy_rank.json").write_text(entropy_rank["json"])
    layout.path("metrics/entropy_rank.md").write_text(entropy_rank["md"])
    layout.path("plots/entropy_hist.csv").write_text(entropy_hist["csv"])
    print(json.dumps(json.loads(entropy_rank["json"]).get("greedy", {})))


if __name__ == "__main__":
    main()
