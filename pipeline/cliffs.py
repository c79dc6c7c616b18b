"""Stage `cliffs`: the cliff test between adjacent positions, first cliff, critical token, taxonomy;
then the DuckDB SQL files write metrics/occurrence.* and metrics/taxonomy.*.

    python pipeline/cliffs.py
"""
import json
import logging
from pathlib import Path

from cliffdata import duck, schema
from cliffdata.cliffs import find_cliffs
from cliffdata.config import load_params
from cliffdata.stats import binary_entropy


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cfg = load_params().cliffs
    cliffs, summaries = find_cliffs(schema.read("traces", schema.PATHS["traces"]),
                                    schema.read("potentials", schema.PATHS["potentials"]),
                                    schema.read("token_stats", schema.PATHS["token_stats"]), cfg)
    schema.write("cliffs", cliffs, schema.PATHS["cliffs"])
    schema.write("trace_cliffs", summaries, schema.PATHS["trace_cliffs"])
    # only the datasets this stage reads and writes: a later stage's outs may be stale while this one runs
    duck.assert_checks(duck.connect(Path("."), ["traces", "token_stats", "potentials", "cliffs", "trace_cliffs"]))
    metrics = duck.write_metrics(Path("."), {"include_empty_prefix": cfg.use_empty_prefix,
                                             "entropy_threshold": binary_entropy(cfg.entropy_boundary_p),
                                             "use_full_entropy": cfg.entropy == "full"})
    print(json.dumps(metrics["occurrence"].get("all", {}), default=str))


if __name__ == "__main__":
    main()
