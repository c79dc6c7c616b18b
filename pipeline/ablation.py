"""Stage `ablation`: Cliff-del vs Cliff-keep continuations at every cliff (and, on failed traces,
Critical-del and Random-del, and with `ablation.matched_control` the matched control arms beside each
cliff, their covariate balance in metrics/ablation.json) and their pass@k curves (protocol §5, RQ1);
the del continuations that re-emit the cliff token are counted, and the others form del_resilient.

    python pipeline/ablation.py

Writes data/ablation/{ablation,pass_at_k}.parquet, the matched controls' candidates and pool traces
(data/ablation/{matched_controls,control_traces}.parquet), metrics/ablation.{json,md} and
plots/pass_at_k.csv, then runs the experiment checks.
"""
import dataclasses
import json
import logging

import pyarrow as pa
from transformers import AutoTokenizer

from cliffdata import grading, schema
from cliffdata.analysis import duck
from cliffdata.backends import open_backend
from cliffdata.checkpoint import stage_checkpoint
from cliffdata.cliffs.select import read_selected_cliffs
from cliffdata.experiments.ablation import (ablation_metrics, ablation_requests, choose_controls, pass_at_k_curve,
                                            pass_at_k_plot, pass_at_k_table, resilience, run_ablation,
                                            sample_control_traces)
from cliffdata.experiments.matching import balance, cliff_covariates, control_pool
from cliffdata.generate.sampling import golds_by_problem
from cliffdata.schema import file_digest, tree_digest
from cliffdata.study import stage_params


def pool_token_stats(model_dir: str, traces: list[dict], cfg, sampling) -> list[dict]:
    """The token statistics of the pool's traces, as the token_stats stage computes them (`token_stats`)."""
    import torch
    from transformers import AutoModelForCausalLM

    from cliffdata.generate.token_stats import compute_token_stats

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, cfg.dtype)).eval()
    with torch.inference_mode():
        return compute_token_stats(model, traces, cfg.top_k, sampling, desc="control pool token_stats")


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    params, _, layout = stage_params("ablation", doc=__doc__)
    cfg, engine = params.ablation, params.engine
    grading.configure(params.grading)
    traces = schema.read("traces", layout.data("traces")).to_pylist()
    golds = golds_by_problem(schema.read("problems", layout.data("problems")).to_pylist())
    cliffs = read_selected_cliffs(params.cliffs.use, layout.root)
    model_dir = str(layout.path("models/base"))
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    # one unit per problem (and per pool problem and estimate batch); a killed run resumes here (removed
    # after the outputs are written): .cache/ablation/<fingerprint>/ under the model's root
    checkpoint = stage_checkpoint("ablation", dataclasses.asdict(engine.resolved()), tree_digest(model_dir),
                                  file_digest(grading.__file__), dataclasses.asdict(params.grading), root=layout.root)
    failed_cliffs = [c for c in cliffs if c["is_correct"] is False]
    pool_traces, matched, candidates = [], [], []
    if cfg.matched_control and failed_cliffs and cfg.control_pool.num_samples:
        # the pool's own traces and their token statistics (the covariates of their positions)
        problems = schema.read("problems", layout.data("problems")).to_pylist()
        with open_backend(engine, model_dir, seed=cfg.seed) as backend:
            pool_traces = sample_control_traces(problems, params.prompts, tokenizer, backend, params.sample.sampling,
                                                cfg.control_pool.num_samples, cfg.seed, checkpoint=checkpoint)
    stats = schema.read("token_stats", layout.data("token_stats"))
    if pool_traces:       # with the backend closed: one model in memory at a time
        stats = pa.concat_tables([stats, schema.to_table("token_stats", pool_token_stats(
            model_dir, pool_traces, params.token_stats, params.rollouts.sampling))])
    with open_backend(engine, model_dir, seed=cfg.seed) as backend:
        if cfg.matched_control and failed_cliffs:
            # each failed-trace cliff beside a matched non-cliff position (experiments/matching.py)
            every_cliff = {(c["trace_id"], c["token_index"])
                           for c in schema.read("cliffs", layout.data("cliffs")).to_pylist()}
            pool = control_pool(traces, every_cliff, stats, pool_traces)
            # the cliff's p[i-1] afresh from the replicate stage where it ran (the detection's where not)
            replicate = layout.data("replicate")
            covariates = cliff_covariates(failed_cliffs, stats, schema.read("replicate", replicate).to_pylist()
                                          if replicate.exists() else [])
            matched, candidates = choose_controls(covariates, pool, traces + pool_traces, golds, backend, tokenizer,
                                                  cfg.control_pool, params.rollouts.sampling, cfg.seed,
                                                  checkpoint=checkpoint)
        requests = ablation_requests(traces, cliffs,
                                     schema.read("trace_cliffs", layout.data("trace_cliffs")).to_pylist(),
                                     cfg.seed, matched, pool_traces)
        rows = run_ablation(requests, traces + pool_traces, golds, backend, tokenizer, cfg.num_rollouts,
                            cfg.sampling, cfg.seed, checkpoint=checkpoint)
    print(checkpoint.report("ablation"), flush=True)
    curve = pass_at_k_curve(rows, cfg.ks)
    schema.write("ablation", rows, layout.data("ablation"))
    schema.write("pass_at_k", curve, layout.data("pass_at_k"))
    schema.write("matched_controls", candidates, layout.data("matched_controls"))
    schema.write("control_traces", pool_traces, layout.data("control_traces"))

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
    duck.assert_checks(duck.connect(layout.root, ["ablation", "pass_at_k", "matched_controls", "control_traces"]))
    checkpoint.remove()
    print(json.dumps({"num_requests": len(rows), "failed": metrics.get("all", {}).get("failed", {})}))


if __name__ == "__main__":
    main()
