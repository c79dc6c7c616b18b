"""Stage `replicate`: fresh rollouts on both sides of every cliff with the rollouts stage's sampler
and a disjoint seed stream, the cliff test on the fresh counts, and the replication rate by category,
feasibility and correctness with Wilson intervals: do the cliffs hold up beyond noise?

    python pipeline/replicate.py

Writes data/replicate/replicate.parquet and metrics/replicate.{json,md}.
"""
import dataclasses
import json
import logging

from transformers import AutoTokenizer

from cliffdata import grading, schema
from cliffdata.analysis import duck
from cliffdata.backends import open_backend
from cliffdata.checkpoint import stage_checkpoint
from cliffdata.experiments.replicate import run_replicate
from cliffdata.generate.sampling import golds_by_problem
from cliffdata.schema import file_digest, tree_digest
from cliffdata.study import stage_params


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    params, _, layout = stage_params("replicate", doc=__doc__)
    cfg, engine = params.replicate, params.engine
    grading.configure(params.grading)
    traces = schema.read("traces", layout.data("traces")).to_pylist()
    golds = golds_by_problem(schema.read("problems", layout.data("problems")).to_pylist())
    cliffs = schema.read("cliffs", layout.data("cliffs")).to_pylist()
    model_dir = str(layout.path("models/base"))
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    # one unit per problem; a killed run resumes here (removed after the outputs are written):
    # .cache/replicate/<fingerprint>/ under the model's root
    checkpoint = stage_checkpoint("replicate", dataclasses.asdict(engine.resolved()), tree_digest(model_dir),
                                  file_digest(grading.__file__), dataclasses.asdict(params.grading), root=layout.root)
    with open_backend(engine, model_dir, seed=cfg.seed) as backend:
        rows = run_replicate(traces, cliffs, golds, backend, tokenizer, cfg.num_rollouts,
                             params.rollouts.sampling, cfg.seed, params.cliffs.test,
                             checkpoint=checkpoint)
    print(checkpoint.report("replicate"), flush=True)
    schema.write("replicate", rows, layout.data("replicate"))

    con = duck.connect(layout.root, ["replicate"])
    duck.assert_checks(con)
    files = duck.table_files(duck.run_sql_file(con, "replication", {}), "group")
    layout.path("metrics").mkdir(exist_ok=True)
    # rollouts whose answer ran out of grading time (counted as not correct), beside the groups
    layout.path("metrics/replicate.json").write_text(json.dumps({**json.loads(files["json"]),
                                                                 "num_grading_timeouts": grading.grader().num_timeouts},
                                                                indent=2) + "\n")
    layout.path("metrics/replicate.md").write_text(files["md"])
    checkpoint.remove()
    print(json.dumps({"num_cliffs": len(rows), "replication": json.loads(files["json"]).get("all", {})}))


if __name__ == "__main__":
    main()
