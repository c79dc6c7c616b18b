"""Stop rollouts at the end of the answer: the cut never changes a grade under the exact rule
(recorded rollouts of the embedded model, hostile texts), and resample's stretches stop where it says."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from cliffdata.backends import Generation
from cliffdata.config.generate import SamplingConfig
from cliffdata.config.search import RolloutsConfig
from cliffdata.generate.sampling import resample
from cliffdata.grading import answer_end, grade

RECORDED = Path(__file__).parent / "data" / "recorded_rollouts.jsonl"


def test_recorded_rollouts_grade_the_same_with_and_without_the_stop():
    """768 rollouts of SmolLM2-135M (bench/stop_at_answer.py --record: 576 under the #### prompt at 72
    prefixes, 192 under the boxed prompt): cut where the exact rule stops, each grades as the whole."""
    rows = [json.loads(line) for line in RECORDED.read_text().splitlines()]
    assert len(rows) == 768 and {r["format"] for r in rows} == {"hash", "boxed"}
    cut = 0
    for r in rows:
        end = answer_end(r["text"], r["format"])
        if end is not None:
            cut += 1
            assert grade(r["text"][:end], r["gold"], r["format"]) == grade(r["text"], r["gold"], r["format"]), r
    assert cut > 0
    assert all(answer_end(r["text"], "boxed") is None for r in rows)       # last box wins: never exact


@pytest.mark.parametrize("text, end", [
    ("so 4 + 3 = 7.\n#### 7\nthen #### 9\n", len("so 4 + 3 = 7.\n#### 7\n")),
    ("#### 7", None),                                   # 7 may still become 71
    ("#### 7.", None),
    ("####\n\n 12 apples\n#### 3\n", len("####\n\n 12 apples\n")),   # the number may sit on a later line
    ("#### 1,234.5\nmore", len("#### 1,234.5\n")),
    ("#### -3/4\n", len("#### -3/4\n")),
    ("no marker 42\n", None),
    ("#### none\n", None),
])
def test_hash_answer_end_is_where_the_first_reader_is_decided(text, end):
    assert answer_end(text, "hash") == end
    if end is not None:
        for tail in ("", "9", "\n#### 5\n", "\\boxed{8}", "999 the answer is 4"):
            assert grade(text[:end] + tail, "7", "hash") == grade(text[:end], "7", "hash")


@pytest.mark.integration
def test_first_box_is_an_opt_in_approximation():
    text = "so \\boxed{\\frac{1}{2}} wait, \\boxed{3}"
    assert answer_end(text, "boxed") is None
    end = answer_end(text, "boxed", first_box=True)
    assert text[:end] == "so \\boxed{\\frac{1}{2}}"
    # the documented cost: a later, different box would have won
    assert grade(text[:end], "3", "boxed").is_correct is False and grade(text, "3", "boxed").is_correct is True
    assert answer_end("\\boxed{} then \\boxed{7} x", "boxed", first_box=True) == len("\\boxed{} then \\boxed{7}")
    with pytest.raises(ValueError, match="answer_format"):
        answer_end("x", "latex")


class ScriptedStop:
    """Continues every request along one scripted continuation (after `base` prompt tokens), stopping
    after the first stop string in what it generated, at the request's limit, or at EOS."""

    def __init__(self, tokenizer, script: str, base: int, honour_stop: bool = True):
        self.tok, self.base, self.honour = tokenizer, base, honour_stop
        self.ids = tokenizer.encode(script, add_special_tokens=False) + [2]
        self.eos_token_ids, self.deterministic = (2,), True
        self.calls: list[list] = []

    def generate(self, requests, sampling):
        self.calls.append(requests)
        out = []
        for r in requests:
            rest = self.ids[len(r.prompt_ids) - self.base:][: r.max_new_tokens or sampling.max_new_tokens]
            if self.honour and r.stop:
                for j in range(1, len(rest) + 1):
                    if any(s in self.tok.decode(rest[:j]) for s in r.stop):
                        rest = rest[:j]
                        break
            out.append(Generation(tuple(tuple(rest) for _ in range(r.n)), ("stop",) * r.n))
        return out


SAMPLING = SamplingConfig(temperature=0.7, max_new_tokens=60)


def _run(tiny_tokenizer, script, prefix_text, mode, honour=True, fmt="hash", gold="7"):
    enc = lambda s: tiny_tokenizer.encode(s, add_special_tokens=False)
    prompt, prefix = [1, 24], enc(prefix_text)
    be = ScriptedStop(tiny_tokenizer, script, len(prompt) + len(prefix), honour)
    (r,) = resample(be, tiny_tokenizer, [(prompt, prefix)], 3, SAMPLING, [5], gold, fmt, mode)
    return r, be


def test_stretches_stop_after_the_answer_line_and_grade_the_same(tiny_tokenizer):
    script = "so 4+3=7.\n#### 7\nthen more text #### 9\n"
    full, _ = _run(tiny_tokenizer, script, "Tom ", "never")
    stopped, be = _run(tiny_tokenizer, script, "Tom ", "exact")
    assert (stopped.num_correct, full.num_correct) == (3, 3)
    cut = len(tiny_tokenizer.encode("so 4+3=7.\n#### 7\n", add_special_tokens=False))
    assert full.num_generated_tokens == 3 * (len(tiny_tokenizer.encode(script, add_special_tokens=False)) + 1)
    assert stopped.num_generated_tokens == 3 * cut
    assert [[r.stop for r in call] for call in be.calls] == [[("####",)], [("\n",)] * 3]
    assert len({r.seed for r in be.calls[1]}) == 3                   # a fresh seed per continuation
    # the answer on a later line than the marker: one more stretch
    late, be = _run(tiny_tokenizer, "so\n####\nit is 7\nmore\n", "", "exact")
    assert late.num_correct == 3 and len(be.calls) == 3


def test_a_prefix_holding_its_answer_gets_no_rollouts(tiny_tokenizer):
    r, be = _run(tiny_tokenizer, "anything\n", "so 7.\n#### 7\nand", "exact")
    assert (r.num_rollouts, r.num_correct, r.num_generated_tokens) == (3, 3, 0) and be.calls == []


def test_a_backend_without_stop_strings_grades_the_same(tiny_tokenizer):
    script = "so 4+3=7.\n#### 7\nthen #### 9\n"
    r, be = _run(tiny_tokenizer, script, "", "exact", honour=False)
    assert r.num_correct == 3 and len(be.calls) == 1               # it ran to EOS: nothing left to continue


def test_boxed_stops_only_with_first_box(tiny_tokenizer):
    from tests.conftest import build_tokenizer

    tok = build_tokenizer("\\{}")
    script = "so \\boxed{7} and \\boxed{9}\n"
    exact, be = _run(tok, script, "", "exact", fmt="boxed")
    assert exact.num_correct == 0 and [r.stop for r in be.calls[0]] == [()]        # last box (9) wins
    first, be = _run(tok, script, "", "first_box", fmt="boxed")
    assert first.num_correct == 3 and len(be.calls) == 2


def test_the_setting_is_validated():
    with pytest.raises(ValueError, match="rollouts.stop_at_answer"):
        RolloutsConfig(stop_at_answer=False)
    with pytest.raises(ValueError, match="stop_at_answer"):
        resample(None, None, [], 1, SAMPLING, [], "7", "hash", "sometimes")
