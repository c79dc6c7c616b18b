"""`analysis` and `entropy`: the out-of-core scan and DuckDB settings, the entropy histogram."""
from __future__ import annotations

import re
from dataclasses import dataclass

from cliffdata.config.validate import check, check_range


@dataclass(frozen=True)
class AnalysisConfig:
    """The out-of-core analysis: the cliffs scan (`threads` worker processes over trace ranges) and the
    in-process DuckDB of the metrics tables, checks and `cliffdata sql` (`threads`; past
    `memory_limit` its sorts, joins and windows spill to `temp_directory` instead of failing, up to
    `max_temp_directory_size`). `sql_timeout` and `sql_max_rows` are `cliffdata sql`'s defaults for
    its `--timeout` and `--max-rows`."""
    threads: int = 2
    memory_limit: str = "3GB"          # DuckDB's size syntax: 512MB, 3GB, 80%
    temp_directory: str | None = None  # spill folder; None: a fresh folder in the system temp, removed afterwards
    max_temp_directory_size: str = "10GB"  # the most the spill folder holds; past it a query fails (512MB, 10GB)
    sql_timeout: float = 300.0         # seconds a `cliffdata sql` statement may compute; 0: no limit
    sql_max_rows: int = 1000           # rows `cliffdata sql --format table` prints; 0: all (csv and json stream all)

    def __post_init__(self):
        check_range("threads", self.threads, 1)
        check(re.fullmatch(r"\s*\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB|%)\s*", self.memory_limit, re.I) is not None,
              f"memory_limit must be a size like 512MB, 3GB or 80%, got {self.memory_limit!r}")
        check(re.fullmatch(r"\s*\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)\s*", self.max_temp_directory_size,
                           re.I) is not None,
              f"max_temp_directory_size must be a size like 512MB or 10GB, got {self.max_temp_directory_size!r}")
        check_range("sql_timeout", self.sql_timeout, 0)
        check_range("sql_max_rows", self.sql_max_rows, 0)


@dataclass(frozen=True)
class EntropyConfig:
    """`entropy`: the entropy histogram of cliff tokens against all tokens (SQL only, no rollouts)."""
    bins: int = 30                     # histogram bins, cliff vs baseline
    max_entropy: float = 3.0           # nats; ln 20 ≈ 3.0 bounds the top-20 entropy; larger values go in the last bin

    def __post_init__(self):
        check(self.bins >= 1, f"entropy.bins must be >= 1, got {self.bins}")
        check(self.max_entropy > 0, f"entropy.max_entropy must be > 0, got {self.max_entropy}")


@dataclass(frozen=True, kw_only=True)
class VerdictsConfig:
    """`verdicts`: how the summary decides each of the paper's directions (analysis/verdicts.py): the
    two-sided level `alpha`, the `power` the printed sample sizes aim at, and the exact tests' budget:
    a test enumerates every sign pattern or group assignment while there are at most `exact_limit` of
    them, and past it draws `resamples` of them from `seed` (the observed one counted in); a matched
    comparison decides only while its covariates' standardized mean differences stay below `max_smd`."""
    alpha: float
    power: float
    exact_limit: int
    resamples: int
    seed: int
    max_smd: float                     # a matched comparison counts only while every |SMD| of its covariates is below

    def __post_init__(self):
        check(0 < self.alpha < 1, f"verdicts.alpha must be in (0, 1), got {self.alpha}")
        check(self.max_smd > 0, f"verdicts.max_smd must be > 0, got {self.max_smd}")
        check(0 < self.power < 1, f"verdicts.power must be in (0, 1), got {self.power}")
        check_range("verdicts.exact_limit", self.exact_limit, 2)
        check_range("verdicts.resamples", self.resamples, 1)
        check_range("verdicts.seed", self.seed, 0)
