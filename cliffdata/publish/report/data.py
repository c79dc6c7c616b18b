"""The data behind the report: one compact JSON payload per trace and one row per trace for the index.

    data = load_report_data(Path("."), params.cliffs)  # the pipeline's datasets under a repository root
    payload = trace_payload(data, "arith/word1-0#0", tokenizer)
    row = index_row(data, "arith/word1-0#0")

Required datasets: problems, traces, token_stats, potentials, cliffs, trace_cliffs. Optional: ablation,
candidates and replicate (the `ablation`, `candidates` and `replicate` stages); without them the
cliffs simply carry no alternatives, no pass@k and no replication verdict. Each cliff carries its
evidence: p-value, the largest drop its token allows (1 − π_s) and feasibility.

The payload is column-oriented so an 8,000-token trace stays under 200 kB: (text, id) pairs are
deduplicated into `vocab` and referenced by index (`tok`); logprobs and entropies are integer
thousandths (`lp`, `ent`, `entf`); the greedy token is stored only where it differs from the sampled
one (`greedy`: position -> vocab index); consecutive potentials store their first index (`pot.start`)
instead of every index (`pot.i`, adaptive mode). A candidate row is [vocab index, prob, N, k,
is_cliff, is_cliff_token]. Token texts are decoded in
context (the text a token adds to the decoded prefix), so SentencePiece word starts keep their space.
"""
from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from cliffdata import schema
from cliffdata.cliffs.stats import pass_at_k
from cliffdata.cliffs.taxonomy import entropy_column
from cliffdata.config.cliffs import CliffsConfig, CliffTest
from cliffdata.scan import TraceRows

log = logging.getLogger(__name__)

REQUIRED = ("problems", "traces", "token_stats", "potentials", "cliffs", "trace_cliffs")
OPTIONAL = ("ablation", "candidates", "replicate")
DECODE_WINDOW = 6          # tokens of left context when decoding one token's text


@dataclass
class ReportData:
    """The pipeline's datasets, indexed by trace for the page builders."""
    problems: dict[str, dict]
    traces: dict[str, dict]
    token_stats: Mapping[str, pd.DataFrame]     # scan.TraceRows: a trace's rows on demand
    potentials: Mapping[str, pd.DataFrame]
    cliffs: dict[str, list[dict]]
    trace_cliffs: dict[str, dict]
    entropy: str               # the token_stats column the taxonomy used (cliffs.entropy)
    test: CliffTest            # cliffs.test: a side below test.min_rollouts is a screening point, never tested
    critical_threshold: float  # cliffs.critical_threshold (the critical token's definition)
    ablation: dict[tuple[str, int], dict[str, dict]] = field(default_factory=dict)
    candidates: dict[tuple[str, int], list[dict]] = field(default_factory=dict)
    replicate: dict[tuple[str, int], dict] = field(default_factory=dict)


def load_report_data(root: Path, cliffs: CliffsConfig, problems_root: Path | None = None) -> ReportData:
    """Read the datasets under `root` (`schema.PATHS`); ablation and candidates only where they exist.
    `cliffs` is params `cliffs`, the section the cliffs stage ran with (entropy, the test, critical_threshold).
    `problems_root`: where the problems are when not under `root` (a study model's root: the project's)."""
    def path(name: str) -> Path:
        return Path(problems_root if name == "problems" and problems_root is not None else root) / schema.PATHS[name]

    missing = [str(path(n)) for n in REQUIRED if not path(n).exists()]
    if missing:
        raise ValueError(f"the report needs {missing}; run the pipeline first")

    def read(name: str):
        return schema.read(name, path(name))

    # the per-token datasets are read a trace at a time (row groups by trace id statistics), not loaded
    stats = TraceRows(Path(root) / schema.PATHS["token_stats"],
                      ["trace_id", "token_index", "token_id", "logprob", "rank", "entropy", "entropy_full", "greedy_token_id",
                       "max_drop"])
    pots = TraceRows(Path(root) / schema.PATHS["potentials"],
                     ["trace_id", "token_index", "mode", "num_rollouts", "num_correct", "is_filled"])
    by_trace: dict[str, list[dict]] = defaultdict(list)
    for c in read("cliffs").to_pylist():
        by_trace[c["trace_id"]].append(c)
    data = ReportData(
        problems={p["problem_id"]: p for p in read("problems").to_pylist()},
        traces={t["trace_id"]: t for t in read("traces").drop_columns(["prompt_ids"]).to_pylist()},
        token_stats=stats,
        potentials=pots,
        cliffs=dict(by_trace),
        trace_cliffs={s["trace_id"]: s for s in read("trace_cliffs").to_pylist()},
        entropy=entropy_column(cliffs), test=cliffs.test, critical_threshold=cliffs.critical_threshold,
    )
    if (Path(root) / schema.PATHS["ablation"]).exists():
        for r in read("ablation").to_pylist():
            if r["arm"] in ("del", "keep"):
                data.ablation.setdefault((r["trace_id"], r["token_index"]), {})[r["arm"]] = r
    if (Path(root) / schema.PATHS["candidates"]).exists():
        for r in read("candidates").to_pylist():
            data.candidates.setdefault((r["trace_id"], r["token_index"]), []).append(r)
    if (Path(root) / schema.PATHS["replicate"]).exists():
        data.replicate = {(r["trace_id"], r["token_index"]): r for r in read("replicate").to_pylist()}
    log.info("report data: %d traces, %d with potentials, %d cliffs, ablation %s, candidates %s, replicate %s",
             len(data.traces), len(data.potentials), sum(map(len, data.cliffs.values())),
             "yes" if data.ablation else "no", "yes" if data.candidates else "no", "yes" if data.replicate else "no")
    return data


def token_texts(tokenizer, ids: list[int]) -> list[str]:
    """The text each token adds to the decoded response, decoded with a few tokens of left context."""
    out = []
    for i in range(len(ids)):
        start = max(0, i - DECODE_WINDOW)
        before = tokenizer.decode(ids[start:i], skip_special_tokens=False) if i > start else ""
        both = tokenizer.decode(ids[start:i + 1], skip_special_tokens=False)
        out.append(both[len(before):] if both.startswith(before) else tokenizer.decode([ids[i]], skip_special_tokens=False))
    return out


def pass_at_ks(num_rollouts: int, num_correct: int) -> dict[str, float]:
    """Unbiased pass@k (stats.pass_at_k) for k = 1, 2, 4, … up to n."""
    ks, k = [], 1
    while k <= num_rollouts:
        ks.append(k)
        k *= 2
    return {str(k): round(pass_at_k(num_rollouts, num_correct, k), 4) for k in ks}


def _milli(values) -> list[int]:
    """Floats as integer thousandths (-0.004 -> -4): a third of the JSON of 3-decimal floats; NaN or an
    infinity (which the data checks flag) as None, shown as missing."""
    return [int(round(float(x) * 1000)) if math.isfinite(float(x)) else None for x in values]


class _Vocab:
    """(text, token id) pairs deduplicated into a list of [text, id]; `add` returns the index."""

    def __init__(self) -> None:
        self.items: list[list] = []
        self.index: dict[tuple[str, int], int] = {}

    def add(self, text: str, token_id: int) -> int:
        key = (text, int(token_id))
        if key not in self.index:
            self.index[key] = len(self.items)
            self.items.append([text, int(token_id)])
        return self.index[key]


def trace_payload(data: ReportData, trace_id: str, tokenizer) -> dict:
    """Everything a trace page draws, as compact columns (see the module docstring)."""
    if trace_id not in data.traces:
        raise ValueError(f"unknown trace {trace_id!r}")
    trace = data.traces[trace_id]
    problem = data.problems.get(trace["problem_id"], {})
    ids = list(trace["response_ids"])
    vocab = _Vocab()
    tok = [vocab.add(text, t) for text, t in zip(token_texts(tokenizer, ids), ids)]

    def single(token_id: int) -> int:
        return vocab.add(tokenizer.decode([token_id], skip_special_tokens=False), token_id)

    stats = data.token_stats.get(trace_id)
    lp, rk, ent, ent_full, md, greedy = [], [], [], [], [], {}
    if stats is not None:
        if len(stats) != len(ids) or list(stats.token_index) != list(range(len(ids))):
            raise ValueError(f"token_stats of {trace_id!r} has {len(stats)} rows for {len(ids)} response tokens")
        lp = _milli(stats.logprob)
        rk = [int(x) for x in stats["rank"]]
        ent = _milli(stats[data.entropy])
        ent_full = _milli(stats.entropy_full)
        md = _milli(stats.max_drop)             # 1 - sampler probability: the largest move a token allows
        for i, (t, g) in enumerate(zip(ids, stats.greedy_token_id)):
            if int(g) != t:
                greedy[str(i)] = single(int(g))

    pots = data.potentials.get(trace_id)
    pot: dict = {"i": [], "n": [], "k": []}
    mode = None
    if pots is not None:
        mode = str(pots["mode"].iloc[0])
        index = [int(x) for x in pots.token_index]
        pot = {"n": [int(x) for x in pots.num_rollouts], "k": [int(x) for x in pots.num_correct]}
        if index == list(range(index[0], index[0] + len(index))):
            pot["start"] = index[0]            # consecutive (exhaustive mode): the JS rebuilds the indices
        else:
            pot["i"] = index

    cliffs = []
    for c in data.cliffs.get(trace_id, []):
        i = c["token_index"]
        item = {"i": i, "cat": c["category"], "pp": c["p_prev"], "p": c["potential"], "np": c["num_rollouts_prev"],
                "n": c["num_rollouts"], "d": round(c["delta"], 4), "first": c["is_first"],
                "pv": float(f"{c['p_value']:.3g}"), "md": None if c["max_drop"] is None else round(c["max_drop"], 4),
                "feas": c["feasible"]}
        rep = data.replicate.get((trace_id, i))
        if rep:
            item["rep"] = {"ok": rep["replicated"], "kp": rep["num_correct_prev"], "np": rep["num_rollouts_prev"],
                           "k": rep["num_correct"], "n": rep["num_rollouts"]}
        cands = data.candidates.get((trace_id, i))
        if cands:
            item["cand"] = [[single(int(r["candidate_id"])), round(r["prob"], 4),
                             r["num_rollouts"], r["num_correct"], bool(r["is_cliff"]), bool(r["is_cliff_token"])]
                            for r in sorted(cands, key=lambda r: -r["prob"])]
        arms = data.ablation.get((trace_id, i))
        if arms:
            item["abl"] = {arm: {"n": r["num_rollouts"], "c": r["num_correct"],
                                 "pass": pass_at_ks(r["num_rollouts"], r["num_correct"])}
                           for arm, r in sorted(arms.items())}
        cliffs.append(item)

    summary = data.trace_cliffs.get(trace_id, {})
    return {
        "trace_id": trace_id, "problem_id": trace["problem_id"], "dataset": problem.get("dataset"),
        "question": problem.get("question"), "gold": problem.get("answer"),
        "extracted": trace["extracted_answer"], "is_correct": trace["is_correct"],
        "finish_reason": trace["finish_reason"], "mode": mode, "critical": summary.get("critical_index"),
        "min_n": data.test.min_rollouts, "crit_thr": data.critical_threshold,
        "entropy": "top20" if data.entropy == "entropy" else "full",
        "vocab": vocab.items, "tok": tok, "lp": lp, "rk": rk, "ent": ent, "entf": ent_full, "md": md,
        "greedy": greedy, "pot": pot, "cliffs": cliffs,
    }


def index_row(data: ReportData, trace_id: str) -> dict:
    """One row of the index: problem, correctness, cliffs, first cliff's category and position."""
    trace = data.traces[trace_id]
    problem = data.problems.get(trace["problem_id"], {})
    cliffs = data.cliffs.get(trace_id, [])
    first = next((c for c in cliffs if c["is_first"]), None)
    pots = data.potentials.get(trace_id)
    p_empty = None
    if pots is not None and len(pots) and int(pots.token_index.iloc[0]) == -1 and pots.num_rollouts.iloc[0] > 0:
        p_empty = float(pots.num_correct.iloc[0] / pots.num_rollouts.iloc[0])
    return {
        "trace_id": trace_id, "problem_id": trace["problem_id"], "dataset": problem.get("dataset") or "",
        "question": problem.get("question") or "", "is_correct": trace["is_correct"],
        "num_tokens": trace["num_tokens"], "num_cliffs": len(cliffs), "has_potentials": pots is not None,
        "first_category": first["category"] if first else None,
        "first_index": first["token_index"] if first else None,
        "critical_index": data.trace_cliffs.get(trace_id, {}).get("critical_index"),
        "categories": sorted({c["category"] for c in cliffs}), "p_empty": p_empty,
    }
