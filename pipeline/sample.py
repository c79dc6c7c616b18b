"""Stage `sample`: K traces per problem with exact sampled token ids, graded.

    python pipeline/sample.py
"""
import dataclasses
import json
import logging

from transformers import AutoTokenizer

from cliffdata import grading, schema
from cliffdata.backends import open_backend
from cliffdata.checkpoint import stage_checkpoint
from cliffdata.generate.sampling import sample_traces
from cliffdata.schema import tree_digest
from cliffdata.study import stage_params


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    params, _, layout = stage_params("sample", doc=__doc__)
    cfg = params.sample
    grading.configure(params.grading)
    problems = schema.read("problems", layout.data("problems")).to_pylist()
    model_dir = str(layout.path("models/base"))
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    # one unit per problem, saved after each batch; a killed run resumes here (removed after the write):
    # .cache/sample/<fingerprint>/ under the model's root
    checkpoint = stage_checkpoint("sample", dataclasses.asdict(params.engine.resolved()), tree_digest(model_dir),
                                  root=layout.root)
    with open_backend(params.engine, model_dir, seed=cfg.seed) as backend:
        rows = sample_traces(problems, params.prompts, tokenizer, backend, cfg.sampling,
                             cfg.num_samples, cfg.seed, checkpoint=checkpoint)
    print(checkpoint.report("sample"), flush=True)
    schema.write("traces", rows, layout.data("traces"))
    labels = [r["is_correct"] for r in rows]
    summary = {"num_traces": len(rows), "num_correct": labels.count(True), "num_failed": labels.count(False),
               "num_ungradable": labels.count(None), "accuracy": round(labels.count(True) / max(len(rows), 1), 6),
               "mean_tokens": round(sum(r["num_tokens"] for r in rows) / max(len(rows), 1), 3),
               "num_truncated": sum(r["finish_reason"] == "length" for r in rows), "backend": params.engine.backend,
               "num_grading_timeouts": grading.grader().num_timeouts,     # among num_ungradable
               "dtype": params.engine.resolved().dtype}
    with open(layout.path("metrics/sample.json"), "w") as f:
        json.dump(summary, f, indent=2, sort_keys=True)
    checkpoint.remove()
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
