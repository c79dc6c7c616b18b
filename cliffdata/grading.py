"""One grader everywhere: extract the answer by the format the prompt asks for, then math-verify parse + verify.

    grade("... so 20 + 23 = 43.\\n#### 43", gold="43", answer_format="hash")          # -> Grade("43", True)
    grade("... so she has \\boxed{84} bananas.", gold="84", answer_format="boxed")  # -> Grade("84", True)

Answer rules (protocol §7, docs/protocol.md). Each format reads the response with three readers, in
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
- None:  ungradable: the gold answer or the extracted prediction cannot be parsed by math-verify, or
  math-verify did not finish within `grading.timeout_seconds` (`Grade.timed_out`).

Every answer is graded in bounded time (`Grader`): sympy evaluates what it parses, and an answer such
as `9^{9^{9}}` or `(10^{100})!` keeps it computing for hours. math-verify's own timeouts are SIGALRM
alarms, which work only in a process's main thread and replace its alarm handler, so they stay off
here; instead a pair that is not plain numbers is graded in a grading process that is killed past
the limit.
"""
from __future__ import annotations

import atexit
import gc
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from functools import lru_cache
from multiprocessing.connection import Connection
from pathlib import Path
from typing import NamedTuple

from math_verify import parse, verify

from cliffdata.config.generate import GradingConfig

log = logging.getLogger(__name__)

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
    timed_out: bool = False            # math-verify ran past grading.timeout_seconds (is_correct is None)


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
    one is the answer). Commas and `$` are dropped."""
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


def _verdict(pred: str, gold: str) -> bool | None:
    """math-verify on two answer strings, unbounded (a grading worker's job, or plain numbers); None when
    either side does not parse."""
    gold_parsed = _parse(gold)
    pred_parsed = _parse(pred)
    if not _is_parsed(gold_parsed) or not _is_parsed(pred_parsed):
        return None
    return bool(verify(gold_parsed, pred_parsed, timeout_seconds=None))


# Answers that are plain numbers (at most 30 digits a part; one `/` or a `\frac` of two integers) parse
# to a number and compare in well under a millisecond: graded in the calling process, no grading process.
_PLAIN_NUMBER = re.compile(r"-?(?:\d{1,30}(?:\.\d{1,30})?(?:/\d{1,30})?|\\[dt]?frac\{\d{1,30}\}\{\d{1,30}\})")
# How long past the limit the caller waits for the grading process's own answer before taking the
# process for stuck and starting another (it only forwards pairs and forks workers: milliseconds)
_GRACE_SECONDS = 10.0
# How long a new grading process may take to import math-verify and warm its parsers
_START_SECONDS = 300.0


def shorten(text: str, width: int = 80) -> str:
    """`text` on one line, cut to about `width` characters (`…` and the total length where cut)."""
    flat = " ".join(text.split())
    return flat if len(flat) <= width else f"{flat[:width]}… ({len(text)} chars)"


class Grader:
    """math-verify's parse + verify of (prediction, gold) pairs, each within `cfg.timeout_seconds` of wall
    clock, from any thread or process.

    Plain numbers on both sides (`_PLAIN_NUMBER`: what the `####` reader returns, and integer fractions)
    are compared in this process. Every other pair goes to a grading process started on first use: a
    subprocess (so no `multiprocessing` re-import of the caller's main module, and allowed in daemonic
    processes) that imports math-verify once, warms its parsers and forks a worker that grades pairs
    one by one. A worker that runs past the limit is
    killed (sympy cannot be interrupted from inside) and the next pair gets a freshly forked one, a few
    milliseconds; the pair is ungradable (`timed_out`), as is a pair whose worker dies (memory). The
    grading process exits when this process closes its socket or dies; a forked copy of this process
    starts its own. Pairs are graded one at a time (a lock), and verdicts are cached per pair, timeouts
    included, so an explosive answer repeated by N rollouts costs the limit once; `num_timeouts` counts
    every timed-out pair asked, cached or not (plus those `count_timeouts` reports from checkpoints),
    and `grade` logs a timed-out pair once as a warning (its repeats at debug level: a trace whose
    prefix holds the answer repeats it in every rollout from every later position).
    """

    def __init__(self, cfg: GradingConfig = GradingConfig()):
        self.cfg = cfg
        self.num_timeouts = 0
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._conn: Connection | None = None
        self._owner = 0                                 # the pid that started the grading process
        self._cached = lru_cache(maxsize=65536)(self._check)
        self._logged: set[tuple[str, str]] = set()      # timed-out pairs already logged as a warning

    def verify(self, pred: str, gold: str) -> tuple[bool | None, bool]:
        """(verdict, timed_out): math-verify's verdict on the pair, None where either side does not parse
        or where it did not finish within the limit (then timed_out)."""
        verdict, timed_out = self._cached(pred, gold)
        if timed_out:
            with self._lock:
                self.num_timeouts += 1
        return verdict, timed_out

    def grade(self, text: str, gold: str, answer_format: str, where: str = "") -> Grade:
        """Grade one response text against a gold answer; a timeout is logged with `where` (the trace or
        problem the response belongs to) and the shortened answer."""
        pred = extract_answer(text, answer_format)
        if pred is None:
            return Grade(None, False)
        gold = gold.strip()
        verdict, timed_out = self.verify(pred, gold)
        if timed_out:
            first = (pred, gold) not in self._logged
            self._logged.add((pred, gold))
            log.log(logging.WARNING if first else logging.DEBUG,
                    "%s: answer '%s' (gold '%s') not graded within grading.timeout_seconds = %g s: ungradable%s",
                    where or "grade", shorten(pred), shorten(gold), self.cfg.timeout_seconds,
                    " (its repeats are counted, logged at debug level)" if first else "")
        return Grade(pred, verdict, timed_out)

    def count_timeouts(self, n: int) -> None:
        """Add `n` timeouts of pairs graded before (a checkpoint unit read back) to `num_timeouts`, so a
        resumed stage reports what an uninterrupted run does."""
        with self._lock:
            self.num_timeouts += n

    def _check(self, pred: str, gold: str) -> tuple[bool | None, bool]:
        if _PLAIN_NUMBER.fullmatch(pred) and _PLAIN_NUMBER.fullmatch(gold):
            return _verdict(pred, gold), False
        with self._lock:
            kind, value = self._ask(pred, gold)
        if kind == "error":
            raise RuntimeError(f"math-verify failed on answer {shorten(pred)!r}, gold {shorten(gold)!r}: {value}")
        if kind == "died":
            log.warning("grading worker died on answer '%s' (%s)", shorten(pred), value)
        return (value, False) if kind == "ok" else (None, True)

    def _ask(self, pred: str, gold: str) -> tuple[str, object]:
        """The grading process's reply to one pair: ("ok", verdict) | ("timeout", None) | ("died", how) |
        ("error", message). A grading process that itself fails to answer is replaced."""
        if self._conn is None or self._owner != os.getpid():
            self._start()
        try:
            self._conn.send((pred, gold, self.cfg.timeout_seconds))
            if self._conn.poll(self.cfg.timeout_seconds + _GRACE_SECONDS):
                return self._conn.recv()
            how = "no answer from the grading process"
        except (EOFError, OSError) as e:
            how = f"grading process lost: {e!r}"
        self._stop()
        return "died", how

    def _start(self) -> None:
        self._conn = self._proc = None                  # a forked copy's are its parent's: left alone
        ours, theirs = socket.socketpair()
        root = str(Path(__file__).resolve().parents[1])           # this checkout's cliffdata, installed or not
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p))
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-c", "import sys; from cliffdata.grading import _serve; _serve(int(sys.argv[1]))",
                 str(theirs.fileno())], pass_fds=(theirs.fileno(),), env=env, stdin=subprocess.DEVNULL)
        finally:
            theirs.close()
        self._conn, self._owner = Connection(ours.detach()), os.getpid()
        try:
            ready = self._conn.poll(_START_SECONDS) and self._conn.recv() == "ready"
        except (EOFError, OSError):
            ready = False
        if not ready:
            code = self._proc.poll()
            self._stop()
            raise RuntimeError(f"the grading process did not start (exit status {code}; its errors are above)")

    def _stop(self) -> None:
        if self._conn is not None:
            self._conn.close()
        if self._proc is not None:
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._conn = self._proc = None

    def close(self) -> None:
        """Stop the grading process (a later pair starts another)."""
        with self._lock:
            if self._owner == os.getpid():
                self._stop()

    def __enter__(self) -> "Grader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _serve(fd: int) -> None:
    """The grading process of a `Grader`: reads (pred, gold, limit) from the socket `fd` and replies with
    what its worker says, ("timeout", None) after killing a worker still busy at the limit, or ("died",
    status) for a worker that died; exits at the end of input."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)                # Ctrl-C stops the caller, whose exit ends this
    logging.getLogger("math_verify").setLevel(logging.ERROR)    # its notice that its own timeouts are off
    _verdict("\\frac{1}{2}", "0.5")                             # build the parsers once: every worker inherits them
    gc.freeze()                                                 # workers' collections skip them: fewer copied pages
    caller = Connection(fd)
    caller.send("ready")
    worker: tuple[int, Connection] | None = None
    try:
        while True:
            try:
                pred, gold, limit = caller.recv()
            except (EOFError, OSError):
                return
            if worker is None:
                worker = _fork_worker(caller)
            pid, conn = worker
            conn.send((pred, gold))
            reply = ("timeout", None)
            if conn.poll(limit):
                try:
                    reply = conn.recv()
                except EOFError:
                    reply = ("died", None)
            if reply[0] in ("timeout", "died"):
                status, worker = _reap(pid, conn), None
                if reply[0] == "died":
                    reply = ("died", f"wait status {status}")
            try:
                caller.send(reply)
            except OSError:                                     # the caller gave up on this process
                return
    finally:
        if worker is not None:
            _reap(*worker)


def _fork_worker(caller: Connection) -> tuple[int, Connection]:
    """A forked worker that answers (pred, gold) pairs with ("ok", verdict) | ("error", message)."""
    ours, theirs = socket.socketpair()
    pid = os.fork()
    if pid == 0:                                                # the worker
        try:
            caller.close()
            ours.close()
            conn = Connection(theirs.detach())
            while True:
                try:
                    pred, gold = conn.recv()
                except EOFError:
                    break
                try:
                    reply = ("ok", _verdict(pred, gold))
                except Exception as e:                          # math-verify catches its own; anything else is a bug
                    reply = ("error", f"{type(e).__name__}: {e}")
                conn.send(reply)
        finally:
            os._exit(0)
    theirs.close()
    return pid, Connection(ours.detach())


def _reap(pid: int, conn: Connection) -> int:
    """Kill a worker and collect it; its wait status."""
    conn.close()
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return os.waitpid(pid, 0)[1]


_grader: Grader | None = None


def configure(cfg: GradingConfig) -> Grader:
    """Make a grader with `cfg` (params `grading`) this process's (`grade`, `verify_answer`), with its timeout
    count at zero; a stage calls it first and reports `grader().num_timeouts` at the end."""
    global _grader
    if _grader is not None:
        _grader.close()
    _grader = Grader(cfg)
    return _grader


def grader() -> Grader:
    """This process's grader (`configure`; the defaults of `GradingConfig` until then)."""
    global _grader
    if _grader is None:
        _grader = Grader()
    return _grader


atexit.register(lambda: _grader is not None and _grader.close())


def verify_answer(pred: str, gold: str) -> bool | None:
    """math-verify on two answer strings; None when either side does not parse or runs out of time."""
    return grader().verify(pred, gold)[0]


def grade(text: str, gold: str, answer_format: str, where: str = "") -> Grade:
    """Grade one response text against a gold answer with this process's grader (`Grader.grade`)."""
    return grader().grade(text, gold, answer_format, where)
