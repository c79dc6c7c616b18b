"""The token taxonomy of protocol §4, defined once for Python and SQL.

A token is *high entropy* when its entropy (the one `cliffs.entropy` names: `entropy`, the top-20, or
`entropy_full`) is above H* = H_b(cliffs.entropy_boundary_p); with its greediness (tie-aware rank 1)
that gives its category:

| high entropy | greedy | category      |
|---|---|---|
| no           | yes    | deterministic |
| yes          | yes    | uncertain     |
| yes          | no     | sampled_off   |
| no           | no     | other         |

`CATEGORY_RULES` is that table. Python reads it through `category_codes` / `categories`; SQL through
the DuckDB macros `high_entropy(entropy, threshold)`, `category_of(high, is_greedy)` and
`token_category(entropy, is_greedy, threshold)`, generated from it and created on every connection
(`duck.engine`), so the SQL files and `cliffdata sql` use the same rule. `sql_params` turns the
`cliffs` params into the SQL files' parameters (the one place the entropy switch is translated).
"""
from __future__ import annotations

import numpy as np

from cliffdata.config.cliffs import CliffsConfig

CATEGORIES = ("deterministic", "uncertain", "sampled_off", "other")
CATEGORY_RULES: dict[tuple[bool, bool], str] = {      # (high entropy, greedy) -> category
    (False, True): "deterministic",
    (True, True): "uncertain",
    (True, False): "sampled_off",
    (False, False): "other",
}
ENTROPY_COLUMNS = {"top20": "entropy", "full": "entropy_full"}     # cliffs.entropy -> token_stats column

_CODE = np.zeros((2, 2), dtype=np.int8)
for (_high, _greedy), _name in CATEGORY_RULES.items():
    _CODE[int(_high), int(_greedy)] = CATEGORIES.index(_name)


def entropy_threshold(cfg: CliffsConfig) -> float:
    """H* in nats (0.0560 for p = 0.99)."""
    from cliffdata.cliffs.stats import binary_entropy  # scipy: kept out of `cliffdata sql`'s imports

    return binary_entropy(cfg.entropy_boundary_p)


def entropy_column(cfg: CliffsConfig) -> str:
    """The token_stats column the taxonomy reads (`cliffs.entropy`)."""
    return ENTROPY_COLUMNS[cfg.entropy]


def category_codes(entropy, is_greedy, threshold: float) -> np.ndarray:
    """Indices into CATEGORIES, on arrays (a NaN entropy is not high)."""
    high = np.asarray(entropy, dtype=np.float64) > threshold
    return _CODE[high.astype(np.int64), np.asarray(is_greedy, dtype=bool).astype(np.int64)]


def categories(entropy, is_greedy, threshold: float) -> np.ndarray:
    """`category_codes` as names."""
    return np.array(CATEGORIES, dtype=object)[category_codes(entropy, is_greedy, threshold)]


def categorize(entropy: float, is_greedy: bool, threshold: float) -> str:
    """The category of one token."""
    return str(categories([entropy], [is_greedy], threshold)[0])


def sql_params(cfg: CliffsConfig) -> dict:
    """The taxonomy parameters of the SQL files: include_empty_prefix (`cliffs.include_empty_prefix`, the same
    name), entropy_threshold, use_full_entropy."""
    return {"include_empty_prefix": cfg.include_empty_prefix, "entropy_threshold": entropy_threshold(cfg),
            "use_full_entropy": entropy_column(cfg) == "entropy_full"}


def sql_macros() -> list[str]:
    """CREATE MACRO statements of the taxonomy, from CATEGORY_RULES."""
    cases = "\n".join(f"        when {'' if high else 'not '}high and {'' if greedy else 'not '}is_greedy then '{name}'"
                      for (high, greedy), name in CATEGORY_RULES.items())
    return [
        # a missing entropy is not high, as NaN > threshold is false in numpy
        "create or replace temp macro high_entropy(entropy, threshold) as coalesce(entropy > threshold, false)",
        f"create or replace temp macro category_of(high, is_greedy) as\n    case\n{cases}\n    end",
        "create or replace temp macro token_category(entropy, is_greedy, threshold) as\n"
        "    category_of(high_entropy(entropy, threshold), is_greedy)",
    ]
