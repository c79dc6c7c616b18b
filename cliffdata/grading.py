"""One grader everywhere: extract the answer by the format the prompt asks for, then math-verify parse + verify.

    grade("... so 20 + 23 = 43.\\n#### 43", gold="43", answer_format="hash")          # -> Grade("43", True)
    grade("... so she has \\boxed{84} bananas.", gold="84", answer_format="boxed")  # -> Grade("84", True)

Answer rules (protocol §7; README "Grading"). Each format reads the response with three readers, in
its own order, and takes the first that finds an answer:

| format | 1st | 2nd | 3rd |
|---|---|---|---|
| `boxed` (prompts that ask for `\\boxed{}`) | last non-empty `\\boxed{}` | "the answer is …" | `####` |
| `hash` (prompts that ask for `####`) | first `####` number | last non-empty `\\boxed{}` | "the answer is …" |

`boxed` is the reference's GSM rule (last box, then "the answer is"); both formats read every
marker, so the format only decides which marker wins when a response has several.

Returns True / False / None (protocol §7):
- False: the response has no answer any reader can find: the model failed to answer (what the
  reference counts as wrong).
- None:  ungradable: the gold answer or the extracted prediction cannot be parsed by math-verify.
"""
from __future__ import annotations

import re
from functools import lru_cache
from typing import NamedTuple

from math_verify import parse, verify

ANSWER_MARKER = "####"
_NUMBER = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?(?:/\d+)?")
_ANSWER_IS = re.compile(r"(?:final answer|the answer)\s*(?:is|:|=)\s*:?\s*", re.IGNORECASE)
_INLINE_MATH = re.compile(r"^(?:\$\$?(.+?)\$\$?|\\\((.+?)\\\)|\\\[(.+?)\\\])", re.DOTALL)
# "1\,234" / "1\!234" / "1{,}234": thousands separators math-verify would misread (1\,234 parses as 235)
_THIN_THOUSANDS = re.compile(r"(?<=\d)(?:\\[,!;: ]|\{,\})(?=\d{3}(?!\d))")
# "84 bananas" (a unit in plain words after a number): math-verify reads it as a product 84*a*a*n*…
_NUMBER_THEN_WORDS = re.compile(r"^(\\?\$?-?\d[\d,]*(?:\.\d+)?)\s+[A-Za-z][A-Za-z ]*\.?$")


class Grade(NamedTuple):
    extracted: str | None
    is_correct: bool | None


def _boxes(text: str) -> list[str]:
    """Contents of every balanced `\\boxed{…}` / `\\fbox{…}`, in order (nested braces kept)."""
    out = []
    for m in re.finditer(r"\\(?:boxed|fbox)\s*\{", text):
        depth, i = 1, m.end()
        for j in range(i, len(text)):
            if text[j] == "{":
                depth += 1
            elif text[j] == "}":
                depth -= 1
                if depth == 0:
                    out.append(text[i:j].strip())
                    break
    return out


def last_boxed(text: str) -> str | None:
    """The last non-empty box (an empty `\\boxed{}` is an echo of the instruction, not an answer)."""
    return next((b for b in reversed(_boxes(text)) if b), None)


def _hash_number(text: str) -> str | None:
    """The first number after the first `####` (a small model often repeats `####` lines, so the first
    one is the answer; protocol notes §3). Commas and `$` are dropped."""
    _, sep, tail = text.partition(ANSWER_MARKER)
    if not sep:
        return None
    m = _NUMBER.search(tail)
    if m is None:
        return None
    return m.group(0).replace(",", "").replace("$", "").rstrip(".")


def _answer_is(text: str) -> str | None:
    """What follows the last "the answer is" / "final answer:": inline math, a number, or the sentence."""
    matches = list(_ANSWER_IS.finditer(text))
    if not matches:
        return None
    tail = text[matches[-1].end():].strip()
    m = _INLINE_MATH.match(tail)
    if m:
        return next(g for g in m.groups() if g is not None).strip() or None
    m = _NUMBER.match(tail)
    if m:
        return m.group(0).replace(",", "").replace("$", "").rstrip(".")
    sentence = re.split(r"\n|\.(?:\s|$)", tail, maxsplit=1)[0]
    sentence = re.sub(r"\\(?:boxed|fbox)\s*\{\s*\}", "", sentence).strip()
    # only math counts: "the answer is not obvious yet" is prose, not an answer
    return sentence[:200] if re.search(r"[\d\\]", sentence) else None


_READERS = {
    "boxed": (last_boxed, _answer_is, _hash_number),
    "hash": (_hash_number, last_boxed, _answer_is),
}


def answer_end(text: str, answer_format: str, first_box: bool = False) -> int | None:
    """Where `text` can stop without changing its grade: the length of the shortest prefix after which
    no continuation changes what `extract_answer` reads, or None while it can still change.

    `hash`: the first reader takes the first number after the first `####`; once that number is
    followed by a newline it cannot grow, so the text can stop after that newline (exact).
    `boxed`: the last non-empty box wins, so no point before the end is exact; with `first_box` the
    text stops after the closing brace of its first non-empty box (a later, different box would have
    overridden it: an approximation the caller opts into)."""
    if answer_format not in _READERS:
        raise ValueError(f"answer_format must be one of {sorted(_READERS)}, got {answer_format!r}")
    if answer_format == "hash":
        head, sep, tail = text.partition(ANSWER_MARKER)
        m = _NUMBER.search(tail) if sep else None
        newline = tail.find("\n", m.end()) if m else -1
        return None if newline < 0 else len(head) + len(sep) + newline + 1
    if not first_box:
        return None
    for m in re.finditer(r"\\(?:boxed|fbox)\s*\{", text):
        depth = 1
        for j in range(m.end(), len(text)):
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            if depth == 0:
                if text[m.end():j].strip():
                    return j + 1
                break
    return None


def normalize_answer(answer: str) -> str:
    """Rewrite what math-verify misreads: thin-space thousands separators, a plain-word unit after a number."""
    answer = _THIN_THOUSANDS.sub("", answer.strip())
    m = _NUMBER_THEN_WORDS.match(answer)
    return m.group(1) if m else answer


def extract_answer(text: str, answer_format: str) -> str | None:
    """The answer string of a response by `answer_format`'s readers (module docstring), or None."""
    readers = _READERS.get(answer_format)
    if readers is None:
        raise ValueError(f"answer_format must be one of {sorted(_READERS)}, got {answer_format!r}")
    for read in readers:
        answer = read(text)
        if answer is not None:
            return normalize_answer(answer)
    return None


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
