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
    params, _, layout = stage_params("candidates", doc=__doc__)
    cfg, engine = params.candidates, params.engine
    grading.configure(params.grading)
    traces = schema.read("traces", layout.data("traces")).to_pylist()
    golds = golds_by_problem(schema.read("problems", layout.data("problems")).to_pylist())
    cliffs = read_selected_cliffs(params.cliffs.use, layout.root)
    stats = schema.read("token_stats", layout.data("token_stats"))
    # p[i-1] and the cliff token's potential: the replicate stage's fresh rollouts, or the detection's (paper)
    fresh = ({(r["trace_id"], r["token_index"]): r for r in schema.read("replicate", layout.data("replicate")).to_pylist()}
             if cfg.fresh_estimates else None)
    requests = candidate_rows(traces, cliffs, stats, schema.read("potentials", layout.data("potentials")), cfg.top_k,
                              fresh)
    model_dir = str(layout.path("models/base"))
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    # one unit per problem; a killed run resumes here (removed after the outputs are written):
    # .cache/candidates/<fingerprint>/ under the model's root
    checkpoint = stage_checkpoint("candidates", dataclasses.asdict(engine.resolved()), tree_digest(model_dir),
                                  file_digest(grading.__file__), dataclasses.asdict(params.grading), root=layout.root)
    with open_backend(engine, model_dir, seed=cfg.seed) as backend:
        rows = run_candidates(requests, traces, golds, backend, tokenizer, cfg.num_rollouts,
                              cfg.sampling, cfg.seed, params.cliffs.test, checkpoint=checkpoint)
        # the Cliff-DPO control: at a random non-cliff, non-greedy position of each cliff's trace, every
        # top-k alternative (the pairs keep as many as the cliff gives, by the cliff pairs' rule)
        top_k = params.dpo_pairs.top_k
        per_cliff = pairs_per_cliff(build_pairs(rows, cliffs, traces, params.dpo_pairs.strategy, top_k))
        every_cliff = {(c["trace_id"], c["token_index"]) for c in schema.read("cliffs", layout.data("cliffs")).to_pylist()}
        control = run_control(
            control_requests(traces, cliffs, per_cliff, stats, every_cliff, top_k, cfg.seed),
            traces, golds, backend, tokenizer, cfg.num_rollouts, cfg.sampling, cfg.seed, params.cliffs.test,
            checkpoint=checkpoint)
    print(checkpoint.report("candidates"), flush=True)
    schema.write("candidates", rows, layout.data("candidates"))
    schema.write("control", control, layout.data("control"))

    con = duck.connect(layout.root, ["candidates", "cliffs", "potentials", "replicate", "token_stats", "trace_cliffs"],
                       params.analysis)
    duck.assert_checks(con)
    cpm = duck.table_files(duck.run_sql_file(con, "cpm_by_category", {}), "category")
    layout.path("metrics").mkdir(exist_ok=True)
    layout.path("plots").mkdir(exist_ok=True)
    # rollouts whose answer ran out of grading time (counted as not correct), beside the categories
    layout.path("metrics/cpm.json").write_text(json.dumps({**json.loads(cpm["json"]),
                                                           "num_grading_timeouts": grading.grader().num_timeouts},
                                                          indent=2) + "\n")
    layout.path("metrics/cpm.md").write_text(cpm["md"])
    layout.path("plots/cpm.csv").write_text(cpm["csv"])
    checkpoint.remove()
    print(json.dumps({"num_candidates": len(rows), "cpm": json.loads(cpm["json"]).get("all", {})}))


if __name__ == "__main__":
    main()
