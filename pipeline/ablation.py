"""Stage `ablation`: Cliff-del vs Cliff-keep continuations at every cliff (and, on failed traces,
Critical-del and Random-del, and with `ablation.matched_control` the matched control arms beside each
cliff, their covariate balance in metrics/ablation.json) and their pass@k curves (protocol §5, RQ1);
the del continuations that re-emit the cliff token are counted, and the others form del_resilient.

    python pipeline/ablation.py

Writes data/ablation/{ablation,pass_at_k}.parquet, metrics/ablation.{json,md} and plots/pass_at_k.csv,
then runs the experiment checks.
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
from cliffdata.experiments.ablation import (ablation_metrics, ablation_requests, pass_at_k_curve, pass_at_k_plot,
                                            pass_at_k_table, resilience, run_ablation)
from cliffdata.experiments.matching import balance, cliff_covariates, control_pool, match_controls
from cliffdata.generate.sampling import golds_by_problem
from cliffdata.schema import file_digest, tree_digest
from cliffdata.study import stage_params


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    params, _, layout = stage_params("ablation", doc=__doc__)
    cfg, engine = params.ablation, params.engine
    grading.configure(params.grading)
    traces = schema.read("traces", layout.data("traces")).to_pylist()
    golds = golds_by_problem(schema.read("problems", layout.data("problems")).to_pylist())
    cliffs = read_selected_cliffs(params.cliffs.use, layout.root)
    matched = []
    if cfg.matched_control:
        # each failed-trace cliff beside a matched non-cliff position (experiments/matching.py)
        stats = schema.read("token_stats", layout.data("token_stats"))
        every_cliff = {(c["trace_id"], c["token_index"]) for c in schema.read("cliffs", layout.data("cliffs")).to_pylist()}
        pool = control_pool(traces, every_cliff, stats, schema.read("potentials", layout.data("potentials")))
        matched = match_controls(cliff_covariates([c for c in cliffs if c["is_correct"] is False], stats), pool,
                                 cfg.seed)
    requests = ablation_requests(traces, cliffs, schema.read("trace_cliffs", layout.data("trace_cliffs")).to_pylist(),
                                 cfg.seed, matched)
    model_dir = str(layout.path("models/base"))
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    # one unit per problem; a killed run resumes here (removed after the outputs are written):
    # .cache/ablation/<fingerprint>/ under the model's root
    checkpoint = stage_checkpoint("ablation", dataclasses.asdict(engine.resolved()), tree_digest(model_dir),
                                  file_digest(grading.__file__), dataclasses.asdict(params.grading), root=layout.root)
    with open_backend(engine, model_dir, seed=cfg.seed) as backend:
        rows = run_ablation(requests, traces, golds, backend, tokenizer, cfg.num_rollouts,
                            cfg.sampling, cfg.seed, checkpoint=checkpoint)
    print(checkpoint.report("ablation"), flush=True)
    curve = pass_at_k_curve(rows, cfg.ks)
    schema.write("ablation", rows, layout.data("ablation"))
    schema.write("pass_at_k", curve, layout.data("pass_at_k"))

    metrics = ablation_metrics(curve)
    metrics["num_grading_timeouts"] = grading.grader().num_timeouts   # rollouts counted as not correct
    metrics["resilience"] = resilience(rows)
    if cfg.matched_control:
        metrics["matched_control"] = balance(matched)
    layout.path("metrics").mkdir(exist_ok=True)
    layout.path("plots").mkdir(exist_ok=True)
    layout.path("metrics/ablation.json").write_text(json.dumps(metrics, indent=2) + "\n")
    layout.path("metrics/ablation.md").write_text(duck.format_markdown(*pass_at_k_table(curve, cfg.ks)))
    layout.path("plots/pass_at_k.csv").write_text(duck.format_csv(*pass_at_k_plot(curve, cfg.ks)))
    duck.assert_checks(duck.connect(layout.root, ["ablation", "pass_at_k"]))
    checkpoint.remove()
    print(json.dumps({"num_requests": len(rows), "failed": metrics.get("all", {}).get("failed", {})}))


if __name__ == "__main__":
    main()
