"""Stage `candidates`: the top-k candidates at every cliff with N rollouts each, whether each is itself a
cliff relative to p_prev, and the cliff probability mass (CPM) and greedy replacement by category
(protocol §5, RQ2/3). Its table is also the input of Cliff-DPO pairs (§6). The entropy x greedy
analysis is the `entropy` stage (SQL only: its bins do not re-run these rollouts).

    python pipeline/candidates.py

Also the Cliff-DPO control: for each cliff, a random non-cliff position of the same trace
with as many random top-k alternatives as the cliff gives pairs, each and the trace's token there
with N rollouts (data/candidates/control.parquet; `dpo_pairs` makes the `random` variant from it).

Writes data/candidates/{candidates,control}.parquet, metrics/cpm.{json,md} and plots/cpm.csv, after
the experiment checks pass.
"""
import dataclasses
import json
import logging
from pathlib import Path

from transformers import AutoTokenizer

from cliffdata import grading, schema
from cliffdata.analysis import duck
from cliffdata.backends import open_backend
from cliffdata.checkpoint import stage_checkpoint
from cliffdata.cliffs.select import read_selected_cliffs
from cliffdata.dpo.pairs import build_pairs, pairs_per_cliff
from cliffdata.experiments.candidates import candidate_rows, run_candidates
from cliffdata.experiments.controls import control_requests, run_control
from cliffdata.generate.sampling import golds_by_problem
from cliffdata.schema import file_digest, tree_digest
from cliffdata.study import stage_params


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    params, _ = stage_params("candidates", doc=__doc__)
    cfg, engine = params.candidates, params.engine
    grading.configure(params.grading)
    traces = schema.read("traces", schema.PATHS["traces"]).to_pylist()
    golds = golds_by_problem(schema.read("problems", schema.PATHS["problems"]).to_pylist())
    cliffs = read_selected_cliffs(params.cliffs.use)
    stats = schema.read("token_stats", schema.PATHS["token_stats"])
    requests = candidate_rows(traces, cliffs, stats, schema.read("potentials", schema.PATHS["potentials"]), cfg.top_k)
    tokenizer = AutoTokenizer.from_pretrained("models/base")
    # one unit per problem; a killed run resumes here (removed after the outputs are written)
    checkpoint = stage_checkpoint("candidates", dataclasses.asdict(engine.resolved()), tree_digest("models/base"),
                                  file_digest(grading.__file__), dataclasses.asdict(params.grading))
    with open_backend(engine, "models/base", seed=cfg.seed) as backend:
        rows = run_candidates(requests, traces, golds, backend, tokenizer, cfg.num_rollouts,
                              cfg.sampling, cfg.seed, params.cliffs.test, checkpoint=checkpoint)
        # the Cliff-DPO control: as many pairs as each cliff gives, at a random non-cliff position of its trace
        top_k = params.dpo_pairs.top_k
        per_cliff = pairs_per_cliff(build_pairs(rows, cliffs, traces, params.dpo_pairs.strategy, top_k))
        every_cliff = {(c["trace_id"], c["token_index"]) for c in schema.read("cliffs", schema.PATHS["cliffs"]).to_pylist()}
        control = run_control(
            control_requests(traces, cliffs, per_cliff, stats, every_cliff, top_k, cfg.seed),
            traces, golds, backend, tokenizer, cfg.num_rollouts, cfg.sampling, cfg.seed,
            checkpoint=checkpoint)
    print(checkpoint.report("candidates"), flush=True)
    schema.write("candidates", rows, schema.PATHS["candidates"])
    schema.write("control", control, schema.PATHS["control"])

    con = duck.connect(Path("."), ["candidates", "cliffs", "potentials", "token_stats", "trace_cliffs"], params.analysis)
    duck.assert_checks(con)
    cpm = duck.table_files(duck.run_sql_file(con, "cpm_by_category", {}), "category")
    Path("metrics").mkdir(exist_ok=True)
    Path("plots").mkdir(exist_ok=True)
    # rollouts whose answer ran out of grading time (counted as not correct), beside the categories
    Path("metrics/cpm.json").write_text(json.dumps({**json.loads(cpm["json"]),
                                                    "num_grading_timeouts": grading.grader().num_timeouts},
                                                   indent=2) + "\n")
    Path("metrics/cpm.md").write_text(cpm["md"])
    Path("plots/cpm.csv").write_text(cpm["csv"])
    checkpoint.remove()
    print(json.dumps({"num_candidates": len(rows), "cpm": json.loads(cpm["json"]).get("all", {})}))


if __name__ == "__main__":
    main()
