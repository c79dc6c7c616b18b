"""`cliffs`: the cliff test, the taxonomy's entropy, the empty prefix and which cliffs the experiments use."""
from __future__ import annotations

from dataclasses import dataclass

from cliffdata.config.validate import check, check_range


CLIFF_SELECTIONS = ("all", "feasible", "replicated")


@dataclass(frozen=True)
class CliffTest:
    """`cliffs.test`: the cliff test of protocol §2, one object for every stage that decides a cliff (the
    rollouts searches, the cliffs scan, replicate, candidates, cliff_count, the report and the bench).

    A drop Δ = p_prev − p_curr is a cliff iff Δ > δ0 and Δ > δ0 + z·SE (`cliffdata.stats.is_cliff`); a pair
    with a side of fewer than `min_rollouts` rollouts is never tested (the cliffs scan, and the searches'
    confirmation at full N). No field has a default: the only definition is params.yaml, so a caller that
    forgets the test fails instead of deciding by other values.
    """
    delta0: float                      # offset δ0
    z: float                           # critical value of the one-sided test (1.645: 95%)
    min_rollouts: int                  # a pair with a side of fewer rollouts is never tested (searches' screening points)

    def __post_init__(self):
        check_range("cliffs.test.delta0", self.delta0, 0, 1, hi_open=True)
        check_range("cliffs.test.z", self.z, 0, lo_open=True)
        check_range("cliffs.test.min_rollouts", self.min_rollouts, 1)


@dataclass(frozen=True)
class CliffsConfig:
    test: CliffTest                    # the cliff test; required (params.yaml `cliffs.test`)
    entropy: str = "top20"             # top20 (paper) | full: which entropy the taxonomy uses
    entropy_boundary_p: float = 0.99   # H* = H_b(0.99) = 0.0560 nats
    include_empty_prefix: bool = True  # test token 0 against p[-1] (paper: false); the SQL files' $include_empty_prefix
    critical_threshold: float = 0.05   # critical token: p == 0 and every later p < this
    fdr_q: float | None = None         # Benjamini-Hochberg level over a dataset's tested pairs; None: off
    use: str = "all"                   # the cliffs ablation / candidates / dpo_pairs work on: all | feasible | replicated

    def __post_init__(self):
        check(isinstance(self.test, CliffTest), f"cliffs.test must be a CliffTest, got {self.test!r}")
        check(self.use in CLIFF_SELECTIONS, f"cliffs.use must be one of {'|'.join(CLIFF_SELECTIONS)}, got {self.use!r}")
        if self.fdr_q is not None:
            check_range("fdr_q", self.fdr_q, 0, 1, lo_open=True, hi_open=True)
        check(self.entropy in ("top20", "full"), f"cliffs.entropy must be top20|full, got {self.entropy!r}")
        check(0.5 < self.entropy_boundary_p < 1, f"cliffs.entropy_boundary_p must be in (0.5, 1), got {self.entropy_boundary_p}")
        check_range("critical_threshold", self.critical_threshold, 0, 1, lo_open=True)
