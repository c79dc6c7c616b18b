"""The checks every params section runs in `__post_init__`: a failed one is a ValueError whose message
names `section.key` and the value it got (`entropy.bins must be >= 1, got 0`)."""
from __future__ import annotations


#: every integer setting fits a signed 64-bit integer: the datasets' columns, numpy and torch seeds hold no more
INT_MIN, INT_MAX = -(2 ** 63), 2 ** 63 - 1


def check(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(msg)


def check_range(name: str, value: float, lo: float | None = None, hi: float | None = None,
                lo_open: bool = False, hi_open: bool = False) -> None:
    """`name must be in [lo, hi], got value` (open ends with `lo_open`/`hi_open`; None = unbounded)."""
    ok = (lo is None or (value > lo if lo_open else value >= lo)) and (hi is None or (value < hi if hi_open else value <= hi))
    if not ok:
        left = "-inf" if lo is None else lo
        right = "inf" if hi is None else hi
        raise ValueError(f"{name} must be in {'(' if lo_open or lo is None else '['}{left}, {right}"
                         f"{')' if hi_open or hi is None else ']'}, got {value!r}")
