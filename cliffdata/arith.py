"""The embedded `arith` problems: the families of seeded arithmetic questions and how many distinct
questions each can draw (a count above that is refused when params load, `config.SourceConfig`).

Pure Python, no numpy at import: the params loader of every stage validates family counts against
`FAMILIES`; the generator itself (`problems.generate_arith`) passes each family its numpy stream.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    import numpy as np

NAMES = ("Tom", "Anna", "Ben", "Lily", "Sam", "Mia", "Jack", "Emma")
ITEMS = ("apples", "pens", "books", "stickers", "marbles", "cookies", "cards", "shells")


def _ints(rng: np.random.Generator, *ranges: tuple[int, int]) -> list[int]:
    """One integer from each inclusive range."""
    return [int(rng.integers(lo, hi + 1)) for lo, hi in ranges]


def _add1(rng: np.random.Generator) -> tuple[str, int]:
    a, b = _ints(rng, (2, 9), (2, 9))
    return f"What is {a} + {b}?", a + b


def _add2(rng: np.random.Generator) -> tuple[str, int]:
    a, b = _ints(rng, (10, 99), (10, 99))
    return f"What is {a} + {b}?", a + b


def _mul21(rng: np.random.Generator) -> tuple[str, int]:
    a, b = _ints(rng, (11, 49), (2, 9))
    return f"What is {a} * {b}?", a * b


def _word1(rng: np.random.Generator) -> tuple[str, int]:
    name, items = NAMES[int(rng.integers(len(NAMES)))], ITEMS[int(rng.integers(len(ITEMS)))]
    a, b = _ints(rng, (5, 40), (3, 30))
    return (f"{name} has {a} {items}. {name} gets {b} more {items}. "
            f"How many {items} does {name} have now?", a + b)


def _word2(rng: np.random.Generator) -> tuple[str, int]:
    name, items = NAMES[int(rng.integers(len(NAMES)))], ITEMS[int(rng.integers(len(ITEMS)))]
    a, k, m = _ints(rng, (5, 40), (2, 5), (2, 9))
    return (f"{name} has {a} {items}. {name} buys {k} bags with {m} {items} in each bag. "
            f"How many {items} does {name} have now?", a + k * m)


@dataclass(frozen=True)
class _Family:
    draw: Callable[[np.random.Generator], tuple[str, int]]
    capacity: int                      # distinct questions: a larger count is refused, not looped on


FAMILIES: dict[str, _Family] = {
    "add1": _Family(_add1, 8 * 8),
    "add2": _Family(_add2, 90 * 90),
    "mul21": _Family(_mul21, 39 * 8),
    "word1": _Family(_word1, len(NAMES) * len(ITEMS) * 36 * 28),
    "word2": _Family(_word2, len(NAMES) * len(ITEMS) * 36 * 4 * 8),
}
