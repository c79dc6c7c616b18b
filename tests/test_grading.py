"""Tests for cliffdata.grading as `(gold, pred_text, answer_format, expected)` tables (protocol §7), and
the grader's time limit on answers that keep sympy computing (`Grader`).

Rows marked "real" are verbatim SmolLM2-135M-Instruct samples (models/base, one-shot or zero-shot
prompts from params.yaml / notes, temperature 0.7); the test itself only uses these literal strings.
Grading an answer that is not a plain number starts the grading process: those tests are `integration`.

    OMP_NUM_THREADS=1 .venv/bin/pytest -q tests/test_grading.py
"""
from __future__ import annotations

import logging
import multiprocessing
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from cliffdata.config.generate import GradingConfig
from cliffdata.grading import Grade, Grader, extract_answer, grade, verify_answer

# (gold, pred_text, answer_format, expected is_correct)
GRADE_TABLE = [
    # --- real one-shot word1 / add2 samples
    ("43", "Emma has 20 stickers and gets 23 more stickers, so 20 + 23 = 43 stickers.\n#### 43", "hash", True),
    ("52", "Liam has 35 marbles and 35 + 17 = 52 marbles.\n#### 52", "hash", True),
    ("52", "To solve this, we need to find out how many marbles Liam has now after Liam gets 17 more "
           "marbles.\nLet's break it down step by step:\nLiam's marbles are 35.\n17 more marbles are added "
           "to Liam's marbles, so Liam's marbles now have Liam's marbles.\n#### 21\n#### 21", "hash", False),
    ("35", "Mia has 9 books, and Mia gets 26 more books.\n#### 26\n#### 26", "hash", False),
    ("35", "Mia has 9 books, so 26 more can be calculated as 26 - 9 = 13 books.\n#### 13", "hash", False),
    ("42", "Noah has 28 cards and gets 14 more, so 28 + 14 = 42 cards.\n#### 42", "hash", True),
    ("42", "Noah has 28 cards and gets 14 more, so 28 + 14 = 32 cards.\n#### 32", "hash", False),
    ("176", "85 + 91 = 176.\n#### 176", "hash", True),
    ("95", "37 + 58 = 125.\n#### 125", "hash", False),
    ("93", "64 + 29 = 93.\n#### 93", "hash", True),
    ("102", "17 * 6 = 104.\n#### 104", "hash", False),
    # --- real zero-shot samples: repeated / counting marker lines, first marker wins
    ("6", "Ava has 12 apples, so if Ava gives away 5 apples, then 12 - 5 = 6 apples are left. Now Dan has "
          "6 apples, so now Ava has 12 - 6 = 6 apples.\n#### 6\nThe answer is 6.\n#### 6\n#### 6\n#### 6\n"
          "#### 6\n#### 6", "hash", True),
    ("7", "Ava gives away 5 apples, so if Alex gives a total of 5 apples, Alex will have 12 - 5 = 6 apples "
          "remaining.\nAva gives away 12 - 5 = 6 apples.\n#### 6\nThe answer is 6.\n#### 12\nThe answer is "
          "12.\n#### 18\nThe answer is 18.\n#### 20\nThe answer is", "hash", False),
    ("12", "Ava gives away 5 apples.\n#### 6\nThe answer is 6.\n#### 12\nThe answer is 12.", "hash", False),
    # --- real zero-shot samples without a marker: no answer → False (the right number in the text
    #     does not count)
    ("-5", "To solve this math problem, we need to first find the difference between 7 and 12, then find "
           "the remainder when adding 12 and 7.\n\nTo do this, we first find the difference between the "
           "two numbers, which is 12 - 7 = 9.\n\nNext, we find the remainder when dividing 12 with 9 to get "
           "3.\n\nSo, 7 - 12 = 9", "hash", False),
    ("1.5", "1\n\nTo find half of 3, you can divide 3 by 2. \n\n3 \u00f7 2 = 1.5\n\nSo, 1.5 is half of 3.",
     "hash", False),
    ("2.5", "To solve this problem, we need to perform the division operation step by step.\n\n1. 4 is "
            "divided by 2. So, 4 \u00f7 2 = 2.\n2. Now, let's consider the next step.\n\n2. 2 is divided "
            "by 2. So, 2 \u00f7 2 = 1.\n\nSo, the answer is 1.", "hash", False),
    # --- repeated markers
    ("22", "#### 22\n#### 22", "hash", True),
    ("2", "#### 2\n#### 3", "hash", True),
    ("3", "#### 2\n#### 3", "hash", False),
    # --- number formats after the marker
    ("1234", "#### $1,234", "hash", True),
    ("1234", "#### 1,234", "hash", True),
    ("1000", "#### 1,000.00", "hash", True),
    ("43", "#### 43.", "hash", True),
    ("43", "so 20 + 23 = 43.\n#### 43.\n", "hash", True),
    ("43", "#### 43 stickers", "hash", True),
    ("43", "####43", "hash", True),
    ("43", "#### x = 43", "hash", True),
    ("43", "#### 43.5", "hash", False),
    ("-5", "#### -5", "hash", True),
    ("-5", "#### 5", "hash", False),
    ("5", "#### -5", "hash", False),
    ("-3", "#### -$3", "hash", True),
    ("-3", "#### $-3", "hash", True),
    ("2.5", "#### 2.50", "hash", True),
    ("2.50", "#### 2.5", "hash", True),
    ("0.5", "#### 1/2", "hash", True),
    ("1/2", "#### 0.5", "hash", True),
    ("0.25", "#### 1/4", "hash", True),
    ("\\frac{1}{2}", "#### 1/2", "hash", True),
    ("0", "#### 0", "hash", True),
    ("10", "#### 10%", "hash", True),
    # --- marker without a number, or no marker at all
    ("43", "Emma has 20 stickers and gets 23 more stickers, so 20 + 23 = 43 stickers.", "hash", False),
    ("3", "#### three", "hash", False),
    ("3", "####", "hash", False),
    ("43", "\\boxed{43}", "hash", True),           # no marker: hash falls back to the last box
    ("84", "... so she has \\boxed{84} bananas.", "hash", True),
    ("84", "#### 83\n\\boxed{84}", "hash", False),     # ...but the marker, when present, wins
    ("84", "Adding them up, the answer is 84.", "hash", True),   # then "the answer is"
    ("", "", "hash", False),
    # --- boxed answers
    ("0.5", "\\boxed{\\frac{1}{2}}", "boxed", True),
    ("\\frac{1}{2}", "\\boxed{\\frac{1}{2}}", "boxed", True),
    ("\\frac{1}{2}", "The answer is $\\boxed{0.5}$.", "boxed", True),
    ("0.5", "\\boxed{\\dfrac{1}{2}}", "boxed", True),
    ("\\frac{1}{3}", "\\boxed{0.33}", "boxed", False),
    ("\\frac{\\sqrt{3}}{2}", "so $\\sin 60^\\circ = \\boxed{\\frac{\\sqrt{3}}{2}}$", "boxed", True),  # nested braces
    ("3", "\\boxed{\\frac{\\sqrt{9}}{1}}", "boxed", True),
    ("\\frac{\\sqrt{3}}{2}", "\\boxed{\\frac{\\sqrt{2}}{2}}", "boxed", False),
    ("5", "First \\boxed{4}. Wait, recheck: \\boxed{5}", "boxed", True),   # the last box wins
    ("4", "First \\boxed{4}. Wait, recheck: \\boxed{5}", "boxed", False),
    ("5", "\\fbox{5}", "boxed", True),
    ("5", "\\boxed{x = 5}", "boxed", True),
    ("(1,2)", "\\boxed{(1, 2)}", "boxed", True),
    ("\\text{(A)}", "\\boxed{A}", "boxed", True),
    ("-5", "\\boxed{-5}", "boxed", True),
    # boxed format falls back to the marker; an unclosed box counts as no box
    ("43", "so 20 + 23 = 43.\n#### 43", "boxed", True),
    ("5", "\\boxed{5\n#### 5", "boxed", True),
    ("5", "\\boxed{5", "boxed", False),
    ("5", "no answer here", "boxed", False),
    # --- unverifiable: gold (or prediction) does not parse → None
    ("", "#### 3", "hash", None),
    ("???", "#### 3", "hash", None),
    ("abc%%", "#### 3", "hash", None),
    ("\\text{}", "#### 3", "hash", None),
    ("???", "\\boxed{???}", "boxed", None),
    ("3", "\\boxed{???}", "boxed", None),
    # --- zero-shot `\\boxed{}` outputs of the kind real instruct models write (Qwen3 / Llama
    #     style, GSM and MATH prompts "put your final answer within \\boxed{}"), on both formats
    ("84", "Maria starts with 60 bananas and buys 24 more, so she has 60 + 24 = 84.\n\nTherefore, Maria "
           "has \\boxed{84} bananas.", "boxed", True),
    ("84", "Maria starts with 60 bananas and buys 24 more, so she has 60 + 24 = 84.\n\nTherefore, Maria "
           "has \\boxed{84} bananas.", "hash", True),
    ("0.5", "The probability is $\\frac{1}{2}$.\n\n**Final Answer**\n\\[\n\\boxed{\\frac{1}{2}}\n\\]", "boxed", True),
    ("\\frac{1}{2}", "So the probability is \\boxed{0.5}.", "boxed", True),
    ("\\frac{\\sqrt{3}}{2}", "Thus $\\cos 30^\\circ = \\boxed{\\dfrac{\\sqrt{3}}{2}}$.", "boxed", True),   # nested braces
    ("18", "She earns 9 * 2 = 18 dollars.\n\n\\boxed{18}\n\nThis means Janet makes $18 every day at the "
           "farmers' market.", "boxed", True),                                     # prose after the box
    ("18", "At first I get \\boxed{16}. Checking again: 16 - 3 - 4 = 9 eggs, 9 * 2 = 18.\n\n\\boxed{18}",
     "boxed", True),                                                                # two boxes: the last
    ("16", "At first I get \\boxed{16}. Checking again: 16 - 3 - 4 = 9 eggs, 9 * 2 = 18.\n\n\\boxed{18}",
     "boxed", False),
    ("18", "The final answer is \\boxed{}.", "boxed", False),                      # an empty box: no answer
    ("18", "Janet makes 18 dollars. The answer is 18. Put it in \\boxed{}.", "boxed", True),  # echo skipped
    ("18", "\\boxed{\\$18}", "boxed", True),                                        # units inside the box
    ("18", "\\boxed{18 \\text{ dollars}}", "boxed", True),
    ("18", "\\boxed{18\\text{ dollars}}", "hash", True),
    ("18", "\\boxed{18 dollars}", "boxed", True),
    ("70", "\\boxed{70\\%}", "boxed", True),
    ("90", "\\boxed{90^\\circ}", "boxed", True),
    ("1234567", "\\boxed{1,234,567}", "boxed", True),                              # thousands separators
    ("1234", "\\boxed{1{,}234}", "boxed", True),
    ("1234", "\\boxed{1\\,234}", "boxed", True),
    ("1234", "\\boxed{\\$1,234}", "boxed", True),
    ("1234", "\\boxed{1,235}", "boxed", False),
    ("5", "The answer is $5$.", "boxed", True),                                     # no box: "the answer is"
    ("5", "The answer is 6.", "boxed", False),
    # ...but a prediction with no answer is a failure, whatever the gold
    ("???", "no marker", "hash", False),
]


@pytest.mark.integration
@pytest.mark.parametrize("gold,pred_text,answer_format,expected", GRADE_TABLE)
def test_grade_table(gold, pred_text, answer_format, expected):
    assert grade(pred_text, gold, answer_format).is_correct is expected


# (pred_text, answer_format, expected extracted answer)
EXTRACT_TABLE = [
    ("Emma has 20 stickers and gets 23 more stickers, so 20 + 23 = 43 stickers.\n#### 43", "hash", "43"),
    ("Mia has 9 books, and Mia gets 26 more books.\n#### 26\n#### 26", "hash", "26"),
    ("#### 22\n#### 22", "hash", "22"),
    ("#### 2\n#### 3", "hash", "2"),
    ("Ava gives away 12 - 5 = 6 apples.\n#### 6\nThe answer is 6.\n#### 12\nThe answer is", "hash", "6"),
    ("#### $1,234", "hash", "1234"),
    ("#### 1,000.00", "hash", "1000.00"),
    ("#### 43.", "hash", "43"),
    ("#### 43 stickers", "hash", "43"),
    ("#### 43.5 stickers", "hash", "43.5"),
    ("####43", "hash", "43"),
    ("####\n43", "hash", "43"),
    ("#### x = 43", "hash", "43"),
    ("#### -5", "hash", "-5"),
    ("#### -$3", "hash", "-3"),
    ("#### $-3", "hash", "-3"),
    ("#### 2.50", "hash", "2.50"),
    ("#### 1/2", "hash", "1/2"),
    ("#### 3 + 4 = 7", "hash", "3"),                 # the first number after the marker, by rule
    ("so 20 + 23 = 43 stickers.", "hash", None),     # no marker
    ("#### three", "hash", None),
    ("####", "hash", None),
    ("", "hash", None),
    ("\\boxed{43}", "hash", "43"),
    ("#### 43\n\\boxed{44}", "hash", "43"),
    ("so the answer is 43 stickers.\nThe answer is 44.", "hash", "44"),   # the last "the answer is"
    ("The answer is: 1,234", "hash", "1234"),
    ("The final answer is $\\frac{3}{4}$.", "boxed", "\\frac{3}{4}"),
    ("Final answer: \\(x^2\\)", "boxed", "x^2"),
    ("The answer is x^2 + 1.\nDone", "boxed", "x^2 + 1"),
    ("The answer is not obvious yet. Let us", "boxed", None),   # prose is no answer
    ("So the answer is \\boxed{}.", "boxed", None),            # an empty box is no answer
    ("\\boxed{84}. I put my final answer within \\boxed{}.", "boxed", "84"),   # echoed empty box skipped
    ("\\boxed{1\\,234}", "boxed", "1234"),
    ("\\boxed{1{,}234}", "boxed", "1234"),
    ("\\boxed{84 bananas}", "boxed", "84"),
    ("\\boxed{\\frac{1}{2}}", "boxed", "\\frac{1}{2}"),
    ("\\boxed{ 7 }", "boxed", "7"),
    ("so $x = \\boxed{\\frac{\\sqrt{3}}{2}}$.", "boxed", "\\frac{\\sqrt{3}}{2}"),
    ("\\boxed{\\left\\{1, 2\\right\\}}", "boxed", "\\left\\{1, 2\\right\\}"),
    ("\\boxed{4} then \\boxed{5}", "boxed", "5"),
    ("\\fbox{5}", "boxed", "5"),
    ("\\boxed{4} then \\fbox{5}", "boxed", "5"),
    ("\\boxed{5\n#### 6", "boxed", "6"),             # unclosed box: fall back to the marker
    ("#### 43\n\\boxed{44}", "boxed", "44"),          # a box beats the marker
    ("so 20 + 23 = 43.\n#### 43", "boxed", "43"),
    ("\\boxed{5", "boxed", None),
    ("nothing", "boxed", None),
]


@pytest.mark.parametrize("pred_text,answer_format,expected", EXTRACT_TABLE)
def test_extract_answer_table(pred_text, answer_format, expected):
    assert extract_answer(pred_text, answer_format) == expected


@pytest.mark.integration
def test_grade_returns_extracted_and_verdict():
    assert grade("so 20 + 23 = 43.\n#### 43", gold="43", answer_format="hash") == Grade("43", True)
    assert grade("no marker", gold="43", answer_format="hash") == Grade(None, False)
    assert grade("#### 3", gold="???", answer_format="hash") == Grade("3", None)


def test_grade_strips_gold():
    assert grade("#### 43", gold="  43\n", answer_format="hash").is_correct is True


@pytest.mark.integration
def test_verify_answer():
    assert verify_answer("2.50", "2.5") is True
    assert verify_answer("3", "2.5") is False
    assert verify_answer("3", "???") is None
    assert verify_answer("???", "3") is None
    assert verify_answer("", "3") is None


@pytest.mark.parametrize("answer_format", ["", "Hash", "latex", "boxed ", None])
def test_unknown_answer_format_raises(answer_format):
    with pytest.raises(ValueError, match="answer_format"):
        extract_answer("#### 43", answer_format)
    with pytest.raises(ValueError, match="answer_format"):
        grade("#### 43", "43", answer_format)


# --- the time limit -----------------------------------------------------------------------------------------

LIMIT = 1.0          # grading.timeout_seconds in these tests (params: 5 s)
SLACK = 0.5          # killing the worker and answering the caller

# Answers a model can write that keep sympy computing for minutes to hours (a power tower, a factorial of a
# huge number, an expansion, LaTeX nested thousands deep): each must come back ungradable within the limit.
EXPLOSIVE = {
    "tower_of_9s": "9^{9^{9^{9^{9}}}}",
    "tower_of_2s": "2^{2^{2^{2^{2^{2^{2}}}}}}",
    "huge_power": "10^{10^{10}}",
    "factorial_of_a_googol": "(10^{100})!",
    "factorial_of_a_big_integer": "99999999!",
    "expanded_polynomial": "(x+1)^{1000000}",
    "tower_of_radicals": "\\sqrt{2}^{\\sqrt{2}^{\\sqrt{2}^{\\sqrt{2}^{100}}}}",
    "nested_fractions": "\\frac{1}{" * 300 + "2" + "}" * 300,
    "nested_braces": "{" * 3000 + "1" + "}" * 3000,
    "enormous_integer": "1" + "0" * 20000,
}


@pytest.fixture(scope="module")
def limited():
    """A grader with a 1 s limit whose grading process is already up (its start-up is not the answer's time)."""
    with Grader(GradingConfig(timeout_seconds=LIMIT)) as g:
        assert g.verify("x + 1", "1 + x") == (True, False)
        yield g


@pytest.mark.integration
@pytest.mark.parametrize("answer", EXPLOSIVE.values(), ids=EXPLOSIVE.keys())
def test_explosive_answer_is_ungradable_within_the_limit(limited, answer, caplog):
    started = time.perf_counter()
    with caplog.at_level(logging.WARNING, logger="cliffdata.grading"):
        graded = limited.grade(f"So the answer is \\boxed{{{answer}}}.", "42", "boxed", where="sample p7#0")
    elapsed = time.perf_counter() - started
    assert graded.extracted == answer and graded.is_correct is None
    assert elapsed < LIMIT + SLACK, f"{elapsed:.2f} s"
    if graded.timed_out:                           # (an enormous integer does not parse: None at once)
        assert "sample p7#0" in caplog.text and answer[:20] in caplog.text and "timeout_seconds" in caplog.text
    # the next ordinary answer is graded by a fresh worker, at once
    started = time.perf_counter()
    assert limited.grade("\\boxed{\\dfrac{\\sqrt{3}}{2}}", "\\frac{\\sqrt{3}}{2}", "boxed").is_correct is True
    assert time.perf_counter() - started < SLACK


@pytest.mark.integration
def test_a_timeout_is_counted_each_time_and_costs_the_limit_once(limited, caplog):
    before = limited.num_timeouts
    text = "so the answer is $3^{3^{3^{3^{3}}}}$."
    started = time.perf_counter()
    with caplog.at_level(logging.WARNING, logger="cliffdata.grading"):
        first = limited.grade(text, "7", "hash", where="rollout p1#0 position 4")
        again = limited.grade(text, "7", "hash", where="rollout p1#0 position 5")
    assert first == again == Grade("3^{3^{3^{3^{3}}}}", None, True)
    assert LIMIT <= time.perf_counter() - started < LIMIT + SLACK        # the second verdict is the cached one
    assert limited.num_timeouts == before + 2
    # logged once (a trace's answer recurs in every rollout after it), counted each time
    assert [r.getMessage().split(":")[0] for r in caplog.records] == ["rollout p1#0 position 4"]
    limited.count_timeouts(3)                      # a resumed unit's timeouts
    assert limited.num_timeouts == before + 5


@pytest.mark.integration
def test_ordinary_answers_grade_as_before_under_a_small_limit(limited):
    """The limit costs nothing to answers that are not explosive: the whole table grades the same."""
    started = time.perf_counter()
    for gold, text, answer_format, expected in GRADE_TABLE:
        graded = limited.grade(text, gold, answer_format)
        assert graded.is_correct is expected and not graded.timed_out, (gold, text)
    assert time.perf_counter() - started < 10


@pytest.mark.integration
def test_worker_threads_grade_with_the_limit(limited):
    """No SIGALRM: a thread that is not the main one gets the limit too, and the others are not stuck."""
    jobs = [("\\boxed{4^{4^{4^{4}}}}", "16"), ("\\boxed{\\frac{1}{2}}", "0.5"), ("#### 12", "12")]
    started = time.perf_counter()
    with ThreadPoolExecutor(3) as pool:
        grades = list(pool.map(lambda job: limited.grade(job[0], job[1], "boxed", where="thread"), jobs))
    assert [(g.is_correct, g.timed_out) for g in grades] == [(None, True), (True, False), (True, False)]
    assert time.perf_counter() - started < LIMIT + SLACK


def _grade_in_child(grader: Grader, queue) -> None:
    grader.verify("y + 1", "1 + y")                # this process's own grading process starts here
    started = time.perf_counter()
    graded = grader.grade("\\boxed{5^{5^{5^{5}}}}", "25", "boxed", where="child")
    queue.put((graded.is_correct, graded.timed_out, time.perf_counter() - started))


@pytest.mark.integration
def test_a_daemonic_child_process_grades_with_the_limit(limited):
    """A forked (daemonic, as in a worker pool) copy of a process whose grader is running starts its own
    grading process (a subprocess: daemonic processes may have those) and gets the limit too."""
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_grade_in_child, args=(limited, queue), daemon=True)
    child.start()
    is_correct, timed_out, elapsed = queue.get(timeout=60)
    child.join(10)
    assert (is_correct, timed_out) == (None, True) and elapsed < LIMIT + SLACK
    assert limited.grade("\\boxed{2^{10}}", "1024", "boxed").is_correct is True     # the parent's own still works


def test_plain_numbers_start_no_grading_process():
    """`####` answers (plain numbers) are graded in process: a unit test may grade them."""
    with Grader(GradingConfig(timeout_seconds=LIMIT)) as g:
        assert [g.verify(p, gold) for p, gold in [("43", "43"), ("1/2", "0.5"), ("\\frac{3}{4}", "0.75"),
                                                   ("-5", "5")]] == [(True, False)] * 3 + [(False, False)]
        assert g._proc is None


def test_timeout_seconds_must_be_positive():
    with pytest.raises(ValueError, match="timeout_seconds"):
        GradingConfig(timeout_seconds=0)
