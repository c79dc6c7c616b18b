"""One grader everywhere: extract the answer by the dataset's marker, then math-verify parse + verify.

    grade("... so 20 + 23 = 43.\\n#### 43", gold="43", answer_format="hash")  # -> Grade("43", True)

Returns True / False / None (protocol §7):
- False: the response has no answer (no `####` number, no `\\boxed{}`): the model failed to answer.
- None:  ungradable: the gold answer or the extracted prediction cannot be parsed by math-verify.
"""
from __future__ import annotations

import re
from functools import lru_cache
from typing import NamedTuple

from math_verify import parse, verify

ANSWER_MARKER = "####"
_NUMBER = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?(?:/\d+)?")


class Grade(NamedTuple):
    extracted: str | None
    is_correct: bool | None


def _last_boxed(text: str) -> str | None:
    start = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if start < 0:
        return None
    i = text.index("{", start) + 1
    depth = 1
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i:j].strip()
    return None  # unbalanced: the box never closed


def extract_answer(text: str, answer_format: str) -> str | None:
    """The answer string of a response, or None when it gave none.

    hash:  the first number after the first `####` (a small model often repeats `####` lines, so the
           first one is the answer; protocol notes §3). Commas and `$` are dropped.
    boxed: the content of the last `\\boxed{}`; falls back to the hash rule.
    """
    if answer_format == "boxed":
        boxed = _last_boxed(text)
        if boxed is not None:
            return boxed
    elif answer_format != "hash":
        raise ValueError(f"answer_format must be 'hash' or 'boxed', got {answer_format!r}")
    _, sep, tail = text.partition(ANSWER_MARKER)
    if not sep:
        return None
    m = _NUMBER.search(tail)
    if m is None:
        return None
    return m.group(0).replace(",", "").replace("$", "").rstrip(".")


@lru_cache(maxsize=65536)
def _parse(expr: str):
    return parse(f"${expr}$", parsing_timeout=None)


def _is_parsed(parsed: list) -> bool:
    # parse() appends the raw matched string as a fallback even when no math object came out
    # (parse("???") == ["???"]), so "parsed" means at least one non-string element.
    return any(not isinstance(x, str) for x in parsed)


@lru_cache(maxsize=65536)
def verify_answer(pred: str, gold: str) -> bool | None:
    """math-verify on two answer strings; None when either side does not parse."""
    gold_parsed = _parse(gold)
    pred_parsed = _parse(pred)
    if not _is_parsed(gold_parsed) or not _is_parsed(pred_parsed):
        return None
    return bool(verify(gold_parsed, pred_parsed, timeout_seconds=None))


def grade(text: str, gold: str, answer_format: str) -> Grade:
    """Grade one response text against a gold answer."""
    pred = extract_answer(text, answer_format)
    if pred is None:
        return Grade(None, False)
    return Grade(pred, verify_answer(pred, gold.strip()))
