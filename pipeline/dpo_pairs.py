"""Stage `dpo_pairs`: Cliff-DPO preference pairs from the candidates, one dataset per category variant
(protocol §6), each with a seeded held-out split, and the same rows in TRL's pre-tokenised format.

    python pipeline/dpo_pairs.py

Writes data/dpo_pairs/<variant>.parquet and data/dpo_pairs/<variant>.trl.parquet for every variant of
`dpo_pairs.VARIANTS`, and metrics/dpo_pairs.json (pairs per variant, split and category).
"""
import json
import logging
from collections import Counter
from pathlib import Path

from cliffdata import schema
from cliffdata.cliffs.select import read_selected_cliffs
from cliffdata.config.load import load_params
from cliffdata.dpo.pairs import (VARIANTS, build_pairs, check_pairs, control_pairs, pairs_per_cliff, to_trl,
                               variant_pairs)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    params = load_params()
    cfg = params.dpo_pairs
    if params.engine.backend == "fake":
        # the fake backend's rollouts are scripted: their potentials are not the model's, and pairs built
        # from them would train an adapter on made-up labels
        raise SystemExit("dpo_pairs: refusing to build pairs from rollouts graded on the fake backend "
                         "(engine.backend: fake); use hf or vllm")
    if cfg.top_k > params.candidates.top_k:
        raise SystemExit(f"dpo_pairs.top_k = {cfg.top_k} exceeds candidates.top_k = {params.candidates.top_k}")
    traces = schema.read("traces", schema.PATHS["traces"]).to_pylist()
    pairs = build_pairs(schema.read("candidates", schema.PATHS["candidates"]).to_pylist(),
                        read_selected_cliffs(params.cliffs.use), traces, cfg.strategy, cfg.top_k)
    pairs += control_pairs(schema.read("control", schema.PATHS["control"]).to_pylist(), traces, cfg.strategy,
                           pairs_per_cliff(pairs))
    replicated = {(r["trace_id"], r["token_index"]) for r in schema.read("replicate", schema.PATHS["replicate"]).to_pylist()
                  if r["replicated"]}
    out = Path("data/dpo_pairs")
    summary = {"strategy": cfg.strategy, "top_k": cfg.top_k, "variants": {}}
    for variant in VARIANTS:
        rows = variant_pairs(pairs, variant, cfg.heldout_fraction, cfg.seed, cfg.heldout_by, replicated)
        check_pairs(rows, f"dpo_pairs/{variant}")
        schema.write("dpo_pairs", rows, out / f"{variant}.parquet")
        schema.write("dpo_trl", to_trl(rows), out / f"{variant}.trl.parquet")
        splits = Counter(r["split"] for r in rows)
        summary["variants"][variant] = {
            "num_pairs": len(rows), "num_train": splits["train"], "num_heldout": splits["heldout"],
            "num_cliffs": len({(r["trace_id"], r["token_index"]) for r in rows}),
            "by_category": dict(sorted(Counter(r["category"] for r in rows).items()))}
    Path("metrics").mkdir(exist_ok=True)
    Path("metrics/dpo_pairs.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    print(json.dumps({v: s["num_pairs"] for v, s in summary["variants"].items()}))


if __name__ == "__main__":
    main()
