"""Three-valued verdicts on the paper's directions (docs/method.md, Verdicts): each direction is
`supported`, `contradicted` or `undecided`, printed with its counts, its test, its exact p and the
interval that test gives, and the number of units that `verdicts.power` would need at the paper's
effect size. A leg the data cannot test is `n/a`, with the reason; no arm ever stands in for a
missing one.

    v = paired_verdict("del > keep", deltas_by_problem, cfg, bounds=(-1, 1), unit="problem")
    v.verdict, v.p, v.interval, v.n_needed

One rule per kind of claim, each an exact test whose exchangeable unit is named:
- paired differences (Cliff-del minus Cliff-keep pass@1, averaged within a problem; one adapter's
  correctness minus another's on an eval problem): the sign-flip test of the mean, over every sign
  pattern while there are at most `exact_limit` of them, else `resamples` patterns drawn from `seed`
  (the observed pattern counted in, so the p-value stays valid); the interval is every shift μ that
  test does not reject at `alpha`, clipped to the difference's range;
- two groups (the CPM of uncertain against sampled-off cliffs): the permutation test of the difference
  in means, over every assignment of units to the groups (or as many drawn), with its interval for a
  shift inverted the same way;
- counts (traces with a cliff among failed and correct traces): Fisher's exact test, with the
  conditional odds ratio's exact interval;
- a figure measured once per seed (a Cliff-DPO accuracy difference): the t-interval over seeds; a
  single seed says nothing about the spread between seeds and is `undecided`.

`supported` needs p < alpha with the estimate in the paper's direction (for seeds: the interval
above zero); `contradicted` the same the other way; anything else, a tie included, is `undecided`.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import stats

from cliffdata.config.analysis import VerdictsConfig

SUPPORTED, CONTRADICTED, UNDECIDED, NOT_APPLICABLE = "supported", "contradicted", "undecided", "n/a"
_EPS = 1e-9                                         # ties between a resampled statistic and the observed one


@dataclass(frozen=True)
class Verdict:
    """One direction's verdict and what it rests on. `estimate` is signed so that > 0 is the paper's
    direction; `n` counts cliffs, traces, problems (and seeds) behind it; `n_needed` is the number of
    `unit`s the test would need for `verdicts.power` at `effect` (the paper's size, `effect_source`),
    None where the data give no spread to compute it from."""
    claim: str
    verdict: str
    test: str = ""
    unit: str = ""
    n: dict = field(default_factory=dict)
    estimate: float | None = None
    interval: tuple[float, float] | None = None
    p: float | None = None
    effect: float | None = None
    effect_source: str = ""
    n_needed: int | None = None
    reason: str = ""
    detail: dict = field(default_factory=dict)      # what informs but does not decide (e.g. one seed's paired test)

    def record(self) -> dict:
        out = asdict(self)
        out["interval"] = None if self.interval is None else [_round(v) for v in self.interval]
        for key in ("estimate", "p", "effect"):
            out[key] = _round(out[key])
        return out


def _round(x: float | None) -> float | None:
    return None if x is None else round(float(x), 6)


def decide(estimate: float, p: float, cfg: VerdictsConfig) -> str:
    """`supported` / `contradicted` where p < alpha and the estimate leans that way, else `undecided`."""
    if p < cfg.alpha and estimate > 0:
        return SUPPORTED
    if p < cfg.alpha and estimate < 0:
        return CONTRADICTED
    return UNDECIDED


# ---- the sign-flip test of a mean (paired differences) ----

def _signs(n: int, cfg: VerdictsConfig) -> tuple[np.ndarray, bool]:
    """Sign patterns (rows) for n units: all 2^n where they fit in `exact_limit`, else `resamples` drawn."""
    if 2 ** n <= cfg.exact_limit:
        bits = (np.arange(2 ** n)[:, None] >> np.arange(n)) & 1
        return 1.0 - 2.0 * bits, True
    rng = np.random.default_rng(cfg.seed)
    return rng.choice([-1.0, 1.0], size=(cfg.resamples, n)), False


def _flip_p(x: np.ndarray, signs: np.ndarray, exact: bool) -> float:
    observed = abs(x.mean())
    extreme = int(np.count_nonzero(np.abs(signs @ x) / len(x) >= observed - _EPS))
    return extreme / len(signs) if exact else (extreme + 1) / (len(signs) + 1)


def sign_flip_p(x: np.ndarray | list[float], cfg: VerdictsConfig) -> float:
    """Two-sided p of the sign-flip test that the units' differences `x` are symmetric about zero."""
    x = np.asarray(x, dtype=float)
    return _flip_p(x, *_signs(len(x), cfg))


def _invert(p_at, estimate: float, bounds: tuple[float, float], alpha: float) -> tuple[float, float]:
    """The shifts μ in `bounds` with p_at(μ) >= alpha around `estimate` (where p is 1): bisection on
    each side, a bound kept where the test rejects nothing up to it."""
    def edge(outer: float) -> float:
        if p_at(outer) >= alpha:
            return outer
        inside = estimate
        for _ in range(50):
            mid = (inside + outer) / 2
            if p_at(mid) >= alpha:
                inside = mid
            else:
                outer = mid
            if abs(outer - inside) < 1e-7:
                break
        return inside
    return edge(bounds[0]), edge(bounds[1])


def sign_flip_interval(x: np.ndarray | list[float], cfg: VerdictsConfig,
                       bounds: tuple[float, float]) -> tuple[float, float]:
    """The shifts of the mean the sign-flip test does not reject at `alpha`, within `bounds`."""
    x = np.asarray(x, dtype=float)
    signs, exact = _signs(len(x), cfg)
    return _invert(lambda mu: _flip_p(x - mu, signs, exact), float(x.mean()), bounds, cfg.alpha)


# ---- the permutation test of a difference in means (two groups) ----

def _assignments(n_a: int, n_b: int, cfg: VerdictsConfig) -> tuple[np.ndarray, bool]:
    """Boolean rows marking group a among n_a + n_b units: every assignment where they fit, else drawn."""
    n = n_a + n_b
    if math.comb(n, n_a) <= cfg.exact_limit:
        rows = np.zeros((math.comb(n, n_a), n), dtype=bool)
        for i, chosen in enumerate(itertools.combinations(range(n), n_a)):
            rows[i, list(chosen)] = True
        return rows, True
    rng = np.random.default_rng(cfg.seed)
    return np.argsort(rng.random((cfg.resamples, n)), axis=1) < n_a, False


def _perm_p(a: np.ndarray, b: np.ndarray, rows: np.ndarray, exact: bool) -> float:
    pooled = np.concatenate([a, b])
    observed = abs(a.mean() - b.mean())
    sums = rows.astype(float) @ pooled
    diffs = sums / len(a) - (pooled.sum() - sums) / len(b)
    extreme = int(np.count_nonzero(np.abs(diffs) >= observed - _EPS))
    return extreme / len(rows) if exact else (extreme + 1) / (len(rows) + 1)


def permutation_p(a: list[float] | np.ndarray, b: list[float] | np.ndarray, cfg: VerdictsConfig) -> float:
    """Two-sided p of the permutation test that groups `a` and `b` share one distribution."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return _perm_p(a, b, *_assignments(len(a), len(b), cfg))


def permutation_interval(a, b, cfg: VerdictsConfig, bounds: tuple[float, float]) -> tuple[float, float]:
    """The shifts mean(a) - mean(b) the permutation test does not reject at `alpha`, within `bounds`."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    rows, exact = _assignments(len(a), len(b), cfg)
    return _invert(lambda mu: _perm_p(a - mu, b, rows, exact), float(a.mean() - b.mean()), bounds, cfg.alpha)


# ---- units needed for power ----

def _z(q: float) -> float:
    return float(stats.norm.ppf(q))


def min_paired_units(alpha: float) -> int:
    """The fewest units whose exact sign-flip test can reach p < alpha (its smallest p is 2 / 2^n)."""
    return math.floor(math.log2(2 / alpha)) + 1


def min_group_units(alpha: float) -> int:
    """The fewest units per group whose exact permutation test can reach p < alpha (2 / C(2n, n))."""
    n = 1
    while 2 / math.comb(2 * n, n) >= alpha:
        n += 1
    return n


def paired_units_needed(effect: float | None, sd: float | None, cfg: VerdictsConfig) -> int | None:
    """Units for `cfg.power` at mean difference `effect` with unit SD `sd` (normal approximation, at least
    what the exact test needs to reach alpha at all)."""
    if effect is None or not sd or effect == 0:
        return None
    n = math.ceil(((_z(1 - cfg.alpha / 2) + _z(cfg.power)) * sd / abs(effect)) ** 2)
    return max(n, min_paired_units(cfg.alpha))


def group_units_needed(effect: float | None, sd: float | None, cfg: VerdictsConfig) -> int | None:
    """Units per group for `cfg.power` at difference `effect` with a common SD `sd` (normal approximation)."""
    if effect is None or not sd or effect == 0:
        return None
    n = math.ceil(2 * ((_z(1 - cfg.alpha / 2) + _z(cfg.power)) * sd / abs(effect)) ** 2)
    return max(n, min_group_units(cfg.alpha))


def proportion_units_needed(p1: float, p2: float, cfg: VerdictsConfig) -> int:
    """Traces per group for `cfg.power` to tell shares p1 and p2 apart (two-sided, pooled normal formula)."""
    bar = (p1 + p2) / 2
    za, zb = _z(1 - cfg.alpha / 2), _z(cfg.power)
    n = (za * math.sqrt(2 * bar * (1 - bar)) + zb * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))) ** 2 / (p1 - p2) ** 2
    return math.ceil(n)


def _sd(x) -> float | None:
    x = np.asarray(x, dtype=float)
    return float(x.std(ddof=1)) if len(x) >= 2 and x.std(ddof=1) > 0 else None


# ---- the verdicts ----

def paired_verdict(claim: str, units: list[float], cfg: VerdictsConfig, *, bounds: tuple[float, float],
                   unit: str, n: dict, effect: float | None = None, effect_source: str = "") -> Verdict:
    """A paired direction: `units` holds one difference per unit (> 0: the paper's direction)."""
    common = dict(claim=claim, test="sign-flip test of the mean", unit=unit, n=n, effect=effect,
                  effect_source=effect_source)
    if not units:
        return Verdict(verdict=UNDECIDED, reason=f"no {unit} to compare", **common)
    x = np.asarray(units, dtype=float)
    p = sign_flip_p(x, cfg)
    estimate = float(x.mean())
    return Verdict(verdict=decide(estimate, p, cfg), estimate=estimate, p=p,
                   interval=sign_flip_interval(x, cfg, bounds),
                   n_needed=paired_units_needed(effect, _sd(x), cfg), **common)


def group_verdict(claim: str, higher: list[float], lower: list[float], cfg: VerdictsConfig, *,
                  bounds: tuple[float, float], unit: str, n: dict, effect: float | None = None,
                  effect_source: str = "") -> Verdict:
    """A two-group direction: the paper has `higher` above `lower`."""
    common = dict(claim=claim, test="permutation test of the difference in means", unit=unit, n=n,
                  effect=effect, effect_source=effect_source)
    if not higher or not lower:
        return Verdict(verdict=UNDECIDED, reason=f"a group has no {unit}", **common)
    a, b = np.asarray(higher, dtype=float), np.asarray(lower, dtype=float)
    p = permutation_p(a, b, cfg)
    estimate = float(a.mean() - b.mean())
    spread = _sd(np.concatenate([a - a.mean(), b - b.mean()])) if len(a) + len(b) >= 3 else None
    return Verdict(verdict=decide(estimate, p, cfg), estimate=estimate, p=p,
                   interval=permutation_interval(a, b, cfg, bounds),
                   n_needed=group_units_needed(effect, spread, cfg), **common)


def count_verdict(claim: str, hits_a: int, total_a: int, hits_b: int, total_b: int, cfg: VerdictsConfig, *,
                  unit: str, n: dict, effect: tuple[float, float] | None = None, effect_source: str = "") -> Verdict:
    """Group a's share above group b's: Fisher's exact test; the interval is the conditional odds
    ratio's exact one (> 1: the paper's direction); the estimate is the difference in shares."""
    common = dict(claim=claim, test="Fisher's exact test (interval: odds ratio)", unit=unit, n=n,
                  effect=None if effect is None else effect[0] - effect[1], effect_source=effect_source)
    needed = None if effect is None else proportion_units_needed(effect[0], effect[1], cfg)
    if not total_a or not total_b:
        return Verdict(verdict=UNDECIDED, reason=f"a group has no {unit}", n_needed=needed, **common)
    table = [[hits_a, total_a - hits_a], [hits_b, total_b - hits_b]]
    p = float(stats.fisher_exact(table, alternative="two-sided").pvalue)
    ci = stats.contingency.odds_ratio(table, kind="conditional").confidence_interval(1 - cfg.alpha)
    estimate = hits_a / total_a - hits_b / total_b
    return Verdict(verdict=decide(estimate, p, cfg), estimate=estimate, p=p,
                   interval=(float(ci.low), float(ci.high)), n_needed=needed, **common)


def seed_verdict(claim: str, per_seed: list[float], cfg: VerdictsConfig, *, n: dict,
                 effect: float | None = None, effect_source: str = "", level: str = "") -> Verdict:
    """A figure measured once per seed (> 0: the paper's direction): the t-interval over seeds decides;
    with one seed the spread between seeds is unknown and the verdict is `undecided`. `level` names what
    the seeds varied (e.g. "training seeds, pairs fixed")."""
    common = dict(claim=claim, test=f"t-interval over {level or 'seeds'}", unit="seed",
                  n={**n, "seeds": len(per_seed)}, effect=effect, effect_source=effect_source)
    if len(per_seed) < 2:
        return Verdict(verdict=UNDECIDED, estimate=per_seed[0] if per_seed else None,
                       reason="one seed: the spread between seeds is unknown", **common)
    x = np.asarray(per_seed, dtype=float)
    estimate, se = float(x.mean()), float(x.std(ddof=1) / math.sqrt(len(x)))
    if se == 0:
        p = 0.0 if estimate != 0 else 1.0
        lo = hi = estimate
    else:
        t = estimate / se
        p = float(2 * stats.t.sf(abs(t), len(x) - 1))
        half = float(stats.t.ppf(1 - cfg.alpha / 2, len(x) - 1)) * se
        lo, hi = estimate - half, estimate + half
    sd = _sd(x)
    needed = None if effect is None or not sd else max(2, math.ceil(
        ((_z(1 - cfg.alpha / 2) + _z(cfg.power)) * sd / abs(effect)) ** 2))
    return Verdict(verdict=decide(estimate, p, cfg), estimate=estimate, p=p, interval=(lo, hi),
                   n_needed=needed, **common)


def not_applicable(claim: str, reason: str, n: dict | None = None) -> Verdict:
    return Verdict(claim=claim, verdict=NOT_APPLICABLE, reason=reason, n=n or {})
