"""The cliffs the experiments work on (`cliffs.use`): all (paper), feasible or replicated.

    cliffs = read_selected_cliffs(params.cliffs.use)        # data/cliffs, and data/replicate when needed
"""
from __future__ import annotations

from pathlib import Path

from cliffdata import schema


def select_cliffs(cliffs: list[dict], use: str, replicate: list[dict] | None = None) -> list[dict]:
    """The cliffs `cliffs.use` asks the experiments to work on: all (paper), feasible (the sampler
    identity allows a detectable drop) or replicated (the test passed again on fresh rollouts,
    `replicate` rows). A cliff without its replicate row is an error (the stage ran on other cliffs)."""
    if use == "all":
        return list(cliffs)
    if use == "feasible":
        return [c for c in cliffs if c["feasible"]]
    if use != "replicated":
        raise ValueError(f"cliffs.use must be all|feasible|replicated, got {use!r}")
    if replicate is None:
        raise ValueError("cliffs.use = replicated needs the replicate stage's output (data/replicate)")
    verdict = {(r["trace_id"], r["token_index"]): r["replicated"] for r in replicate}
    missing = [(c["trace_id"], c["token_index"]) for c in cliffs if (c["trace_id"], c["token_index"]) not in verdict]
    if missing:
        raise ValueError(f"{len(missing)} cliffs have no replicate row (first: {missing[0]}): re-run `replicate`")
    return [c for c in cliffs if verdict[(c["trace_id"], c["token_index"])]]


def read_selected_cliffs(use: str, root: Path = Path(".")) -> list[dict]:
    """`select_cliffs` over the datasets on disk under `root` (data/cliffs, and data/replicate when needed)."""
    cliffs = schema.read("cliffs", root / schema.PATHS["cliffs"]).to_pylist()
    replicate = (schema.read("replicate", root / schema.PATHS["replicate"]).to_pylist() if use == "replicated"
                 else None)
    return select_cliffs(cliffs, use, replicate)
