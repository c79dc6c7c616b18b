"""Stage `candidates`: the top-k candidates at every cliff with N rollouts each, whether each is itself a
cliff relative to p_prev, and the cliff probability mass (CPM) and greedy replacement by category
(protocol §5, RQ2/3). Its table is also the input of Cliff-DPO pairs (§6). The entropy x greedy
analysis is the `entropy` stage (SQL only: its bins do not re-run these rollouts).

    python pipeline/candidates.py

Writes data/candidates/candidates.parquet, metrics/cpm.{json,md} and plots/cpm.csv, after the
experiment checks pass.
"""
import dataclasses
import json
import logging
from pathlib import Path

from transformers import AutoTokenizer

from cliffdata import duck, experiments, grading, schema
from cliffdata.backends import open_backend
from cliffdata.checkpoint import stage_checkpoint
from cliffdata.config import load_params
from cliffdata.sampling import golds_by_problem, to_sampling
from cliffdata.schema import file_digest, tree_digest


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    params = load_params()
    cfg, cliffs_cfg, engine = params.candidates, params.cliffs, params.engine
    traces = schema.read("traces", schema.PATHS["traces"]).to_pylist()
    golds = golds_by_problem(schema.read("problems", schema.PATHS["problems"]).to_pylist())
    requests = experiments.candidate_rows(traces, schema.read("cliffs", schema.PATHS["cliffs"]).to_pylist(),
                                          schema.read("token_stats", schema.PATHS["token_stats"]),
                                          schema.read("potentials", schema.PATHS["potentials"]), cfg.top_k)
    tokenizer = AutoTokenizer.from_pretrained("models/base")
    # one unit per problem; a killed run resumes here (removed after the outputs are written)
    checkpoint = stage_checkpoint("candidates", dataclasses.asdict(engine), tree_digest("models/base"),
                                  file_digest(grading.__file__))
    with open_backend(engine, "models/base", seed=cfg.seed) as backend:
        rows = experiments.run_candidates(requests, traces, golds, backend, tokenizer, cfg.num_rollouts,
                                          to_sampling(cfg.sampling), cfg.seed, cliffs_cfg.delta0, cliffs_cfg.z,
                                          checkpoint=checkpoint)
    print(checkpoint.report("candidates"), flush=True)
    schema.write("candidates", rows, schema.PATHS["candidates"])

    con = duck.connect(Path("."), ["candidates", "cliffs", "potentials", "token_stats", "trace_cliffs"])
    duck.assert_checks(con)
    cpm = experiments.table_files(duck.run_sql_file(con, "cpm_by_category", {}), "category")
    Path("metrics").mkdir(exist_ok=True)
    Path("plots").mkdir(exist_ok=True)
    Path("metrics/cpm.json").write_text(cpm["json"])
    Path("metrics/cpm.md").write_text(cpm["md"])
    Path("plots/cpm.csv").write_text(cpm["csv"])
    checkpoint.remove()
    print(json.dumps({"num_candidates": len(rows), "cpm": json.loads(cpm["json"]).get("all", {})}))


if __name__ == "__main__":
    main()
