"""The token taxonomy is decided once (cliffdata/cliffs/taxonomy.py) and read by Python and SQL alike."""
from __future__ import annotations

import math

import pytest

from cliffdata.analysis import duck
from cliffdata.cliffs import taxonomy
from cliffdata.cliffs.stats import binary_entropy
from project_cliffs import CLIFFS, cliffs_config

H_STAR = binary_entropy(0.99)


def test_rules_cover_every_case_once():
    assert sorted(taxonomy.CATEGORY_RULES) == [(False, False), (False, True), (True, False), (True, True)]
    assert sorted(taxonomy.CATEGORY_RULES.values()) == sorted(taxonomy.CATEGORIES)


@pytest.mark.parametrize("entropy", [0.0, H_STAR / 2, H_STAR, math.nextafter(H_STAR, 1), 0.5, 3.0])
@pytest.mark.parametrize("greedy", [True, False])
def test_sql_macro_is_the_python_rule(entropy, greedy):
    with duck.engine() as con:
        (got,), = con.execute("select token_category($e, $g, $t)", {"e": entropy, "g": greedy, "t": H_STAR}).fetchall()
        (high,), = con.execute("select high_entropy($e, $t)", {"e": entropy, "t": H_STAR}).fetchall()
    assert got == taxonomy.categorize(entropy, greedy, H_STAR)
    assert high == (entropy > H_STAR)


def test_a_missing_entropy_is_low_in_both():
    with duck.engine() as con:
        (got,), = con.execute("select token_category(null::double, true, 0.05)").fetchall()
    assert got == taxonomy.categorize(float("nan"), True, 0.05) == "deterministic"
    assert taxonomy.categorize(float("nan"), False, 0.05) == "other"


def test_one_translation_of_the_entropy_switch():
    assert taxonomy.entropy_column(CLIFFS) == "entropy"
    assert taxonomy.entropy_column(cliffs_config(entropy="full")) == "entropy_full"
    params = taxonomy.sql_params(cliffs_config(entropy="full", include_empty_prefix=False, entropy_boundary_p=0.9))
    assert params == {"include_empty_prefix": False, "entropy_threshold": binary_entropy(0.9), "use_full_entropy": True}
