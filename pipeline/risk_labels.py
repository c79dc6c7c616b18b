"""Stage `risk_labels`: every pair of adjacent positions the cliff test judges, with its verdict (and the
replicate stage's, where it re-tested the cliff) beside the token's features that need no rollout: the
sampler probabilities of the token and of the greedy token, entropies, rank, margin, relative position and,
with `risk_labels.hidden`, the projected hidden state of a teacher-forced pass of models/base (docs/risk.md).

    python pipeline/risk_labels.py

Writes data/risk_labels/risk_labels.parquet and checks it against data/cliffs (the same cliffs).
"""
import json
import logging

from cliffdata import schema
from cliffdata.analysis import duck
from cliffdata.risk.labels import label_tables, replicated_by_cliff, write_labels
from cliffdata.study import stage_params


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    params, _, layout = stage_params("risk_labels", doc=__doc__)
    cfg = params.risk_labels
    if cfg is None:
        raise SystemExit("risk_labels: params.yaml has no `risk_labels` section (docs/risk.md)")
    hidden = cfg.hidden
    project = None
    if hidden is not None:
        import torch
        from transformers import AutoModelForCausalLM

        from cliffdata.risk.hidden import HiddenProjector

        # the projection sums over the hidden width: its last bits follow torch's thread count, pinned as the
        # other teacher-forced stages pin it (dpo_train.threads)
        torch.set_num_threads(params.dpo_train.threads)
        traces = schema.read("traces", layout.data("traces"))
        ids = {t: (p, r) for t, p, r in zip(traces["trace_id"].to_pylist(), traces["prompt_ids"].to_pylist(),
                                            traces["response_ids"].to_pylist())}
        model = AutoModelForCausalLM.from_pretrained(str(layout.path("models/base")),
                                                     dtype=getattr(torch, params.token_stats.dtype)).eval()
        project = HiddenProjector(model, ids, hidden)
    replicate = layout.data("replicate")
    tables = label_tables(layout.data("traces"), layout.data("potentials"), layout.data("token_stats"),
                          replicated_by_cliff(replicate if replicate.exists() else None), params.cliffs,
                          params.rollouts.sampling, project)
    counts = write_labels(layout.data("risk_labels"), tables)
    con = duck.connect(layout.root, ["risk_labels", "cliffs"], params.analysis)
    duck.assert_checks(con)
    duck.close(con)
    print(json.dumps(counts))


if __name__ == "__main__":
    main()
