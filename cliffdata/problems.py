"""Problem sets: load GSM8K, GSM1K, MATH500 and AIME, or generate the embedded `arith` problems.

    params = load_params()
    rows, stats = load_problems(params.problems, prompts=params.prompts)

Rows follow `schema.PROBLEMS`. A source `path` is a local JSONL or Parquet file (relative to `root`)
or, when no such file exists, a hub dataset id read with `datasets.load_dataset(path, split=split)`.

Problem ids are stable and never depend on the `subset` drawn: `<dataset>/<source id>` (MATH
`unique_id`, AIME `id`) or `<dataset>/<row:05d>` (0-based row in the source, bad rows included), and
`arith/<family>-<index:05d>` for generated problems. Paper subsets (protocol §8): GSM-type sets draw a
seeded sample of `subset` rows, MATH500 a sample stratified by level, AIME takes the first `subset`
rows; every subset keeps source order.
"""
from __future__ import annotations

import json
import logging
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from cliffdata.arith import FAMILIES
from cliffdata.config.problems import ProblemsConfig, PromptConfig, SourceConfig
from cliffdata.grading import last_boxed

log = logging.getLogger(__name__)

DEFAULT_ANSWER_FORMATS = {"arith": "hash", "gsm8k": "hash", "gsm1k": "hash", "math500": "boxed", "aime": "boxed"}
FILE_SUFFIXES = (".jsonl", ".parquet")


def load_problems(cfg: ProblemsConfig, root: Path = Path("."),
                  prompts: dict[str, PromptConfig] | None = None) -> tuple[list[dict], dict]:
    """All problems of `cfg.sources` (schema `problems` rows, in source order) and their stats.

    A row's `answer_format` is its source's `answer_format`, else what its prompt asks for (`prompts`,
    `PromptConfig.asks_for`), else the dataset's default; `max_new_tokens` is its source's budget.
    Stats: counts per dataset and family, per source, and the skipped bad rows (`on_bad_row: skip`).
    Raises ValueError on a bad row (`on_bad_row: error`) and on a problem id given by two rows.
    """
    prompts = prompts or {}
    rows: list[dict] = []
    owner: dict[str, tuple[int, int]] = {}   # problem_id -> (source, 0-based row) that produced it
    sources, skipped = [], []
    for i, src in enumerate(cfg.sources):
        if src.dataset == "arith":
            src_rows = generate_arith(src, prompts)
            src_skipped, num_rows = [], len(src_rows)
        else:
            src_rows, src_skipped, num_rows = _load_source(src, Path(root), cfg, prompts)
        if not src_rows:
            raise ValueError(f"problems.sources[{i}] ({_describe(src)}): no problems "
                             f"({num_rows} rows read, {len(src_skipped)} skipped as bad)")
        for row in src_rows:
            pid = row["problem_id"]
            if pid in owner:
                j, index = owner[pid]
                raise ValueError(f"duplicate problem_id {pid!r}: problems.sources[{j}] ({_describe(cfg.sources[j])}) "
                                 f"row {index} and problems.sources[{i}] ({_describe(src)}) row {row['source_index']}")
            owner[pid] = (i, row["source_index"])
        log.info("%s: %d problems, %d bad rows skipped", _describe(src), len(src_rows), len(src_skipped))
        rows += src_rows
        skipped += src_skipped
        sources.append({"dataset": src.dataset, "path": src.path, "num_rows": num_rows,
                        "num_skipped": len(src_skipped), "num_problems": len(src_rows)})
    stats = {
        "num_problems": len(rows),
        "num_by_dataset": dict(sorted(Counter(r["dataset"] for r in rows).items())),
        "num_by_family": dict(sorted(Counter(r["family"] for r in rows if r["family"] is not None).items())),
        "num_skipped": len(skipped),
        "skipped": skipped,
        "sources": sources,
    }
    return rows, stats


# --- loaded sets -----------------------------------------------------------------------------------

class _BadRow(Exception):
    """A malformed source row: the field at fault (None for the whole row) and why."""

    def __init__(self, field: str | None, reason: str):
        super().__init__(reason)
        self.field = field
        self.reason = reason


@dataclass(frozen=True)
class _Item:
    question: str
    answer: str
    source_id: str | None = None
    family: str | None = None
    level: str | None = None


def _load_source(src: SourceConfig, root: Path, cfg: ProblemsConfig,
                 prompts: dict[str, PromptConfig]) -> tuple[list[dict], list[dict], int]:
    """Rows of one file/hub source after its subset, the skipped bad rows, and the number of source rows.
    A row is bad (`cfg.on_bad_row`) when it does not parse or its question or answer is longer than
    `cfg.max_chars`."""
    if src.families or src.family_prompts:
        raise ValueError(f"problems.sources: `families`/`family_prompts` are for dataset 'arith' only, "
                         f"got them on {src.dataset!r}")
    parse = _PARSERS[src.dataset]
    items: list[tuple[int, _Item]] = []
    skipped: list[dict] = []
    num_rows = 0
    for index, where, raw in _read_rows(src, root):
        num_rows += 1
        try:
            item = parse(_as_record(raw))
            for name in ("question", "answer"):
                length = len(getattr(item, name))
                if length > cfg.max_chars:
                    raise _BadRow(name, f"{length:,} characters, more than problems.max_chars = {cfg.max_chars:,}")
            items.append((index, item))
        except _BadRow as bad:
            field = f" field {bad.field!r}" if bad.field else ""
            if cfg.on_bad_row == "error":
                raise ValueError(f"{where}:{field} {bad.reason} (problems.on_bad_row: skip skips such rows)") from None
            log.warning("skipping %s:%s %s", where, field, bad.reason)
            skipped.append({"where": where, "field": bad.field, "reason": bad.reason})
    return [_row(src, index, item, prompts) for index, item in _select(src, items)], skipped, num_rows


def _read_rows(src: SourceConfig, root: Path) -> Iterator[tuple[int, str, bytes | dict]]:
    """(0-based row, location for messages, raw row) of a source: JSONL lines stay bytes until parsed."""
    path = root / src.path
    if path.is_file():
        if path.suffix == ".jsonl":
            yield from _jsonl_rows(path, src.path)
        elif path.suffix == ".parquet":
            yield from _parquet_rows(path, src.path)
        else:
            raise ValueError(f"problems.sources: {src.path!r} is neither JSONL nor Parquet "
                             f"(expected a suffix in {FILE_SUFFIXES}, got {path.suffix!r})")
    elif path.suffix in (*FILE_SUFFIXES, ".json"):  # a missing file, not a hub id: don't go to the network
        raise ValueError(f"problems.sources: file {src.path!r} does not exist (looked in {root.resolve()})")
    else:
        yield from _hub_rows(src)


def _jsonl_rows(path: Path, name: str) -> Iterator[tuple[int, str, bytes]]:
    index = 0
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, start=1):
            if line.strip():
                yield index, f"{name} line {lineno}", line
                index += 1


def _parquet_rows(path: Path, name: str) -> Iterator[tuple[int, str, dict]]:
    try:
        table = pq.read_table(path)
    except pa.ArrowInvalid as e:
        raise ValueError(f"{name}: not a readable Parquet file ({e})") from e
    for index, record in enumerate(table.to_pylist()):
        yield index, f"{name} row {index}", record


def _hub_rows(src: SourceConfig) -> Iterator[tuple[int, str, dict]]:
    import datasets  # only when a source is a hub id

    for index, record in enumerate(datasets.load_dataset(src.path, src.name, split=src.split)):
        yield index, f"{src.path}[{src.split}] row {index}", record


def _as_record(raw: bytes | dict) -> dict:
    if isinstance(raw, dict):
        return raw
    try:
        value = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise _BadRow(None, f"invalid JSON ({e})") from None
    if not isinstance(value, dict):
        raise _BadRow(None, f"expected a JSON object, got {type(value).__name__}")
    return value


def _text(record: dict, *fields: str) -> str:
    """The first of `fields` present in `record`, as non-empty text (numbers are written as text)."""
    field = next((f for f in fields if record.get(f) is not None), None)
    if field is None:
        raise _BadRow("/".join(fields), "missing")
    value = record[field]
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise _BadRow(field, f"expected text or a number, got {value!r}")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    if not text:
        raise _BadRow(field, "empty")
    return text


def _optional_text(record: dict, *fields: str) -> str | None:
    field = next((f for f in fields if record.get(f) is not None and str(record[f]).strip()), None)
    return None if field is None else _text(record, field)


def _parse_gsm(record: dict, require_hash: bool) -> _Item:
    """GSM8K: gold = text after the last `####`, commas removed; GSM1K may give the plain answer."""
    question, answer = _text(record, "question"), _text(record, "answer")
    if "####" in answer:
        answer = answer.rsplit("####", 1)[1]
    elif require_hash:
        raise _BadRow("answer", f"no '####' in {answer[-80:]!r}")
    answer = answer.replace(",", "").strip()
    if not answer:
        raise _BadRow("answer", "empty after '####'")
    return _Item(question, answer)


def _parse_math500(record: dict) -> _Item:
    """MATH500: gold = `answer`, else the last `\\boxed{}` of the worked `solution` (the MATH release has only that)."""
    if _optional_text(record, "answer") is not None or _optional_text(record, "solution") is None:
        answer = _text(record, "answer")
    else:
        answer = last_boxed(_text(record, "solution"))
        if answer is None:
            raise _BadRow("solution", "no `answer` field and no \\boxed{} in the solution")
    return _Item(_text(record, "problem"), answer, source_id=_optional_text(record, "unique_id"),
                 family=_optional_text(record, "subject"), level=_optional_text(record, "level"))


def _parse_aime(record: dict) -> _Item:
    return _Item(_text(record, "problem", "question"), _text(record, "answer"),
                 source_id=_optional_text(record, "id", "ID"))


_PARSERS: dict[str, Callable[[dict], _Item]] = {
    "gsm8k": lambda record: _parse_gsm(record, require_hash=True),
    "gsm1k": lambda record: _parse_gsm(record, require_hash=False),
    "math500": _parse_math500,
    "aime": _parse_aime,
}


def _select(src: SourceConfig, items: list[tuple[int, _Item]]) -> list[tuple[int, _Item]]:
    """The paper subset of a source's usable rows, in source order."""
    n = src.subset
    if n is None:
        return items
    if n > len(items):
        raise ValueError(f"problems.sources: {_describe(src)} has {len(items)} usable rows, fewer than subset {n}")
    if src.dataset == "aime":
        return items[:n]
    if src.dataset == "math500":
        picks = stratified_sample([item.level for _, item in items], n, src.seed)
    else:
        picks = sorted(np.random.default_rng(src.seed).choice(len(items), size=n, replace=False).tolist())
    return [items[i] for i in picks]


def stratified_sample(strata: list[str | None], n: int, seed: int) -> list[int]:
    """Sorted indices of `n` of the items, allocated to strata in proportion to their sizes.

    Largest-remainder rounding (ties go to the first stratum in sorted order); each stratum draws
    with its own seed, `default_rng([seed, crc32(stratum)])`, so strata do not affect each other.
    """
    if not 0 <= n <= len(strata):
        raise ValueError(f"stratified_sample: n must be in [0, {len(strata)}], got {n}")
    groups: dict[str | None, list[int]] = {}
    for i, stratum in enumerate(strata):
        groups.setdefault(stratum, []).append(i)
    keys = sorted(groups, key=lambda k: (k is None, str(k)))
    quota = {k: n * len(groups[k]) // len(strata) for k in keys}
    remainder = {k: n * len(groups[k]) % len(strata) for k in keys}
    for k in sorted(keys, key=lambda k: -remainder[k])[: n - sum(quota.values())]:  # stable sort keeps ties in order
        quota[k] += 1
    picks: list[int] = []
    for k in keys:
        rng = np.random.default_rng([seed, _stable_hash(str(k))])
        picks += rng.choice(groups[k], size=quota[k], replace=False).tolist()
    return sorted(picks)


def _row(src: SourceConfig, index: int, item: _Item, prompts: dict[str, PromptConfig]) -> dict:
    ident = item.source_id if item.source_id is not None else f"{index:05d}"
    return {"problem_id": f"{src.dataset}/{ident}", "dataset": src.dataset, "question": item.question,
            "answer": item.answer, "answer_format": answer_format(src, src.prompt, prompts), "prompt": src.prompt,
            "family": item.family, "level": item.level, "source_index": index, "max_new_tokens": src.max_new_tokens}


def answer_format(src: SourceConfig, prompt: str, prompts: dict[str, PromptConfig]) -> str:
    """How a problem's responses are graded: the source's format, else what its prompt asks for, else
    the dataset's default (a `\\boxed{}` prompt is never graded by `####` first; docs/protocol.md §7)."""
    asks = prompts[prompt].asks_for if prompt in prompts else None
    return src.answer_format or asks or DEFAULT_ANSWER_FORMATS[src.dataset]


def _describe(src: SourceConfig) -> str:
    return src.dataset if src.path is None else f"{src.dataset} {src.path!r}"


def _stable_hash(name: str) -> int:
    """A hash that, unlike `hash()`, is the same in every process."""
    return zlib.crc32(name.encode())


# --- the embedded generator (its families: cliffdata/arith.py) ------------------------------------

def generate_arith(src: SourceConfig, prompts: dict[str, PromptConfig] | None = None) -> list[dict]:
    """The `arith` problems of a source: `src.families[f]` distinct questions of each family f.

    Each family draws from its own stream, `default_rng([seed, crc32(family)])`, so the rows of one
    family depend only on the seed and its own count (a larger count extends the same list).
    """
    stray = sorted(set(src.family_prompts) - set(src.families))
    if stray:
        raise ValueError(f"problems.sources: family_prompts name families {stray} that are not in families")
    if src.subset is not None:
        raise ValueError(f"problems.sources: arith takes per-family counts in `families`, not subset {src.subset}")
    rows = []
    for family in sorted(src.families):
        count, spec = src.families[family], FAMILIES[family]       # in [0, capacity]: SourceConfig checks it
        rng = np.random.default_rng([src.seed, _stable_hash(family)])
        seen: set[str] = set()
        while len(seen) < count:
            question, answer = spec.draw(rng)
            if question in seen:
                continue
            seen.add(question)
            index = len(seen) - 1
            prompt = src.family_prompts.get(family, src.prompt)
            rows.append({"problem_id": f"arith/{family}-{index:05d}", "dataset": "arith", "question": question,
                         "answer": str(answer), "answer_format": answer_format(src, prompt, prompts or {}),
                         "prompt": prompt, "family": family, "level": None, "source_index": index,
                         "max_new_tokens": src.max_new_tokens})
    return rows
