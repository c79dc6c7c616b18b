"""Exports for tools outside this project: `cliffdata export pairs|potentials|pts`.

    cliffdata export potentials --out exports/potentials          # HF `datasets`, save_to_disk + README.md card
    cliffdata export pts --out exports/cliffs.pts.jsonl            # PTS v2 pivotal-token events
    cliffdata export pairs --out exports/pairs.jsonl               # TRL preference rows (or .parquet)

**potentials**: one row per trace with token-level value labels aligned to `response_ids`
(`values[i]` = potential after response token i, null where not evaluated), read back by
`datasets.load_from_disk`; the folder carries a dataset card (README.md).

**pts**: one JSON object per cliff, a `CausalReasoningEvent` of the PTS v2 schema
(codelion/pts, docs/dataset_schema_v2.md, `schema_version` "2.0") with the v1 pivotal-token fields
alongside, so v1 and v2 readers both take it (a v2 reader parks the v1 fields in `metadata`):

    identity     event_id (str, "token_evt_" + sha1 of model_id, query, context, label; 12 hex),
                 event_type ("pivotal_token"), granularity ("token"), visibility ("emitted")
    provenance   model_id, dataset_id?, dataset_item_id?, task_type ("math"), query, timestamp (ISO 8601)
    location     context (the decoded prompt + response before the token, special tokens and chat template
                 kept, as PTS's token searcher writes it), label (the token's text in context), position
                 (absolute index in prompt + response, as PTS), token_id, layer? (null), layer_name? (null)
    scoring      score (= |prob_delta|), prob_before (p[i-1]), prob_after (p[i]), prob_delta (after - before,
                 negative for a cliff), is_positive (false), confidence? (null)
    method       search_method ("token_pts"), intervention_type ("append_token"), readout_method? (null)
    links        category? (null: PTS's taxonomy is not ours), tags (["token_pts", "negative", "cliff",
                 <our category>]), parent_event_id? (null), linked_event_ids, precedes_event_ids,
                 follows_event_ids ([]), metadata (object)
    v1 fields    pivot_context, pivot_token, pivot_token_id (and query, prob_*, model_id, task_type above)

`metadata` holds our extras: trace_id, cliff_category, is_first, trace_is_correct, num_rollouts_prev,
num_rollouts, entropy, rank, our own conventions `response_context` (the response prefix only) and
`response_position` (the response index), plus pivot_context / pivot_token as PTS's own writer puts them
there. A cliff is a negative event; PTS's DPO exporter pairs a negative event with
`metadata.chosen_token` / `chosen_prob` (it skips the event without them), so where the candidates stage
measured the cliff's alternatives, the best one that is not itself a cliff is written there
(`chosen_token` its text in context, `chosen_token_id`, `chosen_prob` its potential, the success
probability PTS compares with `prob_after`, `chosen_num_rollouts`). `validate_pts_event` checks a record
against this list.

**pairs**: TRL's pre-tokenised preference format, `prompt_ids`, `chosen_ids`, `rejected_ids` (one token
each: Cliff-DPO is single-token), from the `dpo_pairs` dataset's `prompt_ids`, `chosen_id`,
`rejected_id`; other columns (trace_id, token_index, category, split, ...) ride along. Read back
with `trl.trainer.dpo_trainer.DataCollatorForPreference`.

**Where it writes** (`cliffdata.publish.outputs`): never inside the repository's `data/`, `models/`, `study/`, a
file git tracks, an output dvc.yaml declares, the export's own input, or through a symbolic link; an
existing path is replaced only when it is exactly what an earlier export wrote (a manifest beside the file,
`.<name>.cliffdata`, or inside the folder, `.cliffdata-export`, lists the sha256 of each file). Every
export is written in a temporary sibling and renamed into place.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cliffdata import schema
from cliffdata.publish.outputs import write_file, write_folder
from cliffdata.publish.report.data import DECODE_WINDOW, token_texts

log = logging.getLogger(__name__)

#: who wrote an export, in its manifest (`cliffdata.publish.outputs`): only such a file or folder is ever replaced
WRITTEN_BY = "cliffdata export"
#: the manifest inside an exported folder (the potentials dataset)
FOLDER_MARKER = ".cliffdata-export"

# --- PTS v2 --------------------------------------------------------------------------------------------

PTS_SCHEMA_VERSION = "2.0"
# field -> allowed JSON types; None in the tuple = nullable (docs/dataset_schema_v2.md of codelion/pts).
PTS_V2_FIELDS: dict[str, tuple] = {
    "schema_version": (str,), "event_id": (str,), "event_type": (str,), "granularity": (str,), "visibility": (str,),
    "model_id": (str,), "dataset_id": (str, None), "dataset_item_id": (str, None), "task_type": (str,),
    "query": (str,), "timestamp": (str,),
    "context": (str,), "label": (str,), "position": (int, None), "token_id": (int, None), "layer": (int, None),
    "layer_name": (str, None),
    "score": (float,), "prob_before": (float, None), "prob_after": (float, None), "prob_delta": (float, None),
    "is_positive": (bool, None), "confidence": (float, None),
    "search_method": (str,), "intervention_type": (str, None), "readout_method": (str, None),
    "category": (str, None), "tags": (list,), "parent_event_id": (str, None), "linked_event_ids": (list,),
    "precedes_event_ids": (list,), "follows_event_ids": (list,), "metadata": (dict,),
}
# v1 pivotal-token fields written alongside (a v1 reader needs them; a v2 reader parks them in metadata).
PTS_V1_FIELDS: dict[str, tuple] = {"pivot_context": (str,), "pivot_token": (str,), "pivot_token_id": (int,)}
PTS_CATEGORIES = ("interpretation", "planning", "decomposition", "fact_retrieval", "computation", "verification",
                  "self_correction", "backtracking", "uncertainty", "exploration", "consolidation", "final_answer",
                  "tool_use", "safety", "deception_or_shortcut", "unknown")


def pts_event_id(model_id: str, query: str, context: str, label: str) -> str:
    """PTS's deterministic token-event id: sha1 of the parts joined by U+001F, first 12 hex digits."""
    payload = "\x1f".join([model_id, query, context, label])
    return f"token_evt_{hashlib.sha1(payload.encode('utf-8')).hexdigest()[:12]}"


def _is(value, types: tuple) -> bool:
    if value is None:
        return None in types
    if isinstance(value, bool):
        return bool in types
    if isinstance(value, int):
        return int in types or float in types
    return any(t is not None and isinstance(value, t) for t in types)


def validate_pts_event(record: dict) -> None:
    """Raise ValueError naming the field if `record` is not a PTS v2 pivotal-token event (+ v1 fields)."""
    fields = {**PTS_V2_FIELDS, **PTS_V1_FIELDS}
    missing = sorted(set(fields) - set(record))
    if missing:
        raise ValueError(f"PTS event lacks fields {missing}")
    unknown = sorted(set(record) - set(fields))
    if unknown:
        raise ValueError(f"PTS event has unknown fields {unknown}")
    for name, types in fields.items():
        if not _is(record[name], types):
            raise ValueError(f"PTS field {name!r} must be {types}, got {record[name]!r}")
    expected = {"schema_version": PTS_SCHEMA_VERSION, "event_type": "pivotal_token", "granularity": "token",
                "visibility": "emitted"}
    for name, value in expected.items():
        if record[name] != value:
            raise ValueError(f"PTS field {name!r} must be {value!r}, got {record[name]!r}")
    if record["category"] is not None and record["category"] not in PTS_CATEGORIES:
        raise ValueError(f"PTS category must be one of {PTS_CATEGORIES} or null, got {record['category']!r}")
    before, after, delta = record["prob_before"], record["prob_after"], record["prob_delta"]
    for name in ("prob_before", "prob_after"):
        if not 0 <= record[name] <= 1:
            raise ValueError(f"PTS field {name!r} must be a probability, got {record[name]!r}")
    if not math.isclose(delta, after - before, abs_tol=1e-9) or not math.isclose(record["score"], abs(delta), abs_tol=1e-9):
        raise ValueError(f"PTS prob_delta/score inconsistent: before {before}, after {after}, delta {delta}, "
                         f"score {record['score']}")
    if record["is_positive"] != (delta > 0):
        raise ValueError(f"PTS is_positive must be prob_delta > 0, got {record['is_positive']!r} for {delta}")
    if record["event_id"] != pts_event_id(record["model_id"], record["query"], record["context"], record["label"]):
        raise ValueError(f"PTS event_id {record['event_id']!r} is not the hash of its model, query, context, label")


def pts_events(root: Path, tokenizer, model_id: str, task_type: str = "math",
               timestamp: str | None = None, problems_root: Path | None = None) -> list[dict]:
    """One PTS v2 event per cliff of the datasets under `root` (see the module docstring); the problems
    under `problems_root` when given (a study model's root: the project's)."""
    timestamp = timestamp or datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    traces = {t["trace_id"]: t for t in schema.read("traces", root / schema.PATHS["traces"]).to_pylist()}
    problems = {p["problem_id"]: p for p in schema.read(
        "problems", Path(problems_root if problems_root is not None else root) / schema.PATHS["problems"]).to_pylist()}
    chosen = best_alternatives(root)
    events = []
    for c in schema.read("cliffs", root / schema.PATHS["cliffs"]).to_pylist():
        trace = traces.get(c["trace_id"])
        if trace is None:
            raise ValueError(f"cliff names trace {c['trace_id']!r}, which is not in the traces dataset")
        problem = problems[trace["problem_id"]]
        ids, i = trace["response_ids"], c["token_index"]
        prefix = list(trace["prompt_ids"]) + list(ids[:i])
        context = tokenizer.decode(prefix, skip_special_tokens=False)
        label = token_texts(tokenizer, ids[max(0, i - DECODE_WINDOW):i + 1])[-1]
        before, after = float(c["p_prev"]), float(c["potential"])
        delta = after - before
        events.append({
            "schema_version": PTS_SCHEMA_VERSION,
            "event_id": pts_event_id(model_id, problem["question"], context, label),
            "event_type": "pivotal_token", "granularity": "token", "visibility": "emitted",
            "model_id": model_id, "dataset_id": problem["dataset"], "dataset_item_id": problem["problem_id"],
            "task_type": task_type, "query": problem["question"], "timestamp": timestamp,
            "context": context, "label": label, "position": len(prefix), "token_id": int(c["token_id"]),
            "layer": None, "layer_name": None,
            "score": abs(delta), "prob_before": before, "prob_after": after, "prob_delta": delta,
            "is_positive": delta > 0, "confidence": None,
            "search_method": "token_pts", "intervention_type": "append_token", "readout_method": None,
            "category": None, "tags": ["token_pts", "negative" if delta < 0 else "positive", "cliff", c["category"]],
            "parent_event_id": None, "linked_event_ids": [], "precedes_event_ids": [], "follows_event_ids": [],
            "metadata": {"pivot_context": context, "pivot_token": label, "trace_id": c["trace_id"],
                         "cliff_category": c["category"], "is_first": c["is_first"],
                         "trace_is_correct": c["is_correct"], "num_rollouts_prev": c["num_rollouts_prev"],
                         "num_rollouts": c["num_rollouts"], "entropy": c["entropy"], "rank": c["rank"],
                         "response_context": tokenizer.decode(ids[:i], skip_special_tokens=False),
                         "response_position": i},
            "pivot_context": context, "pivot_token": label, "pivot_token_id": int(c["token_id"]),
        })
        alt = chosen.get((c["trace_id"], i))
        if alt is not None and delta < 0:
            events[-1]["metadata"].update(
                chosen_token=token_texts(tokenizer, [*ids[max(0, i - DECODE_WINDOW):i], alt["candidate_id"]])[-1],
                chosen_token_id=int(alt["candidate_id"]), chosen_prob=float(alt["potential"]),
                chosen_num_rollouts=int(alt["num_rollouts"]))
    return events


def best_alternatives(root: Path) -> dict[tuple[str, int], dict]:
    """Per cliff, the measured candidate with the highest potential that is neither the cliff token nor a
    cliff itself (ties: the more probable); none where the candidates stage did not run."""
    path = root / schema.PATHS["candidates"]
    if not path.exists():
        return {}
    best: dict[tuple[str, int], dict] = {}
    for r in schema.read("candidates", path).to_pylist():
        if r["is_cliff_token"] or r["is_cliff"]:
            continue
        key, held = (r["trace_id"], r["token_index"]), best.get((r["trace_id"], r["token_index"]))
        if held is None or (r["potential"], r["prob"]) > (held["potential"], held["prob"]):
            best[key] = r
    return best


def write_jsonl(rows: list[dict], out: Path) -> None:
    """JSON lines, atomically, replacing only a file an earlier export wrote (`cliffdata.publish.outputs`)."""
    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False, allow_nan=False) + "\n")

    write_file(Path(out), write, WRITTEN_BY)


# --- TRL preference pairs --------------------------------------------------------------------------------

PAIR_COLUMNS = ("prompt_ids", "chosen_id", "rejected_id")


def trl_pairs(pairs: pa.Table, split: str | None = None) -> pa.Table:
    """TRL rows (`prompt_ids`, `chosen_ids`, `rejected_ids` + the other columns) from Cliff-DPO pairs."""
    missing = [c for c in PAIR_COLUMNS if c not in pairs.column_names]
    if missing:
        raise ValueError(f"pairs lack columns {missing}; have {pairs.column_names}")
    if split is not None:
        if "split" not in pairs.column_names:
            raise ValueError(f"--split {split!r} given but the pairs have no split column")
        pairs = pairs.filter(pc.equal(pairs["split"], split))
    one = pa.list_(pa.int32())

    def wrap(name: str) -> pa.Array:
        values = pairs[name].combine_chunks().cast(pa.int32())
        return pa.ListArray.from_arrays(pa.array(range(len(values) + 1), pa.int32()), values).cast(one)

    rest = [c for c in pairs.column_names if c not in PAIR_COLUMNS]
    return pa.table({"prompt_ids": pairs["prompt_ids"].cast(one), "chosen_ids": wrap("chosen_id"),
                     "rejected_ids": wrap("rejected_id"), **{c: pairs[c] for c in rest}})


def write_pairs(table: pa.Table, out: Path) -> None:
    """JSONL or Parquet by the file suffix, atomically, replacing only a file an earlier export wrote."""
    if out.suffix == ".parquet":
        write_file(Path(out), lambda tmp: pq.write_table(table, tmp), WRITTEN_BY)
    elif out.suffix in (".jsonl", ".json"):
        write_jsonl(table.to_pylist(), out)
    else:
        raise ValueError(f"pairs export needs a .jsonl or .parquet path, got {out}")


# --- potentials as a Hugging Face dataset -------------------------------------------------------------

CARD = """---
pretty_name: {title}
task_categories:
- text-generation
tags:
- math
- reasoning
- value-labels
- cliff-tokens
size_categories:
- n<1K
---

# {title}

Token-level value labels for LLM math reasoning traces, from the cliffdata pipeline (token-wise
*potential* by rollouts; "Cliff Tokens", Ko, Kang, Lee, arXiv 2606.25524).

- {num_traces} traces ({num_correct} correct, {num_failed} failed, {num_ungradable} ungradable), {num_tokens} response tokens,
  {num_labelled} token positions with a value label, {num_cliffs} cliffs.
- Rollout mode(s): {modes}; rollouts per evaluated position (N): {n_values}.

## Columns (one row per trace)

| column | meaning |
|---|---|
| `trace_id`, `problem_id`, `dataset` | ids; `trace_id` = `<problem_id>#<sample index>` |
| `question`, `answer` | the problem and its gold answer |
| `prompt_ids`, `response_ids` | exact token ids (chat-templated prompt; sampled response, never re-tokenised) |
| `response_text`, `is_correct` | decoded response; its grade (null = ungradable) |
| `values` | per response token i: the potential after token i = share of N rollouts from `prompt + response[:i+1]` that end correct; null where not evaluated (adaptive mode, or the last token) |
| `num_rollouts`, `num_correct` | per response token: N and correct rollouts behind `values[i]` (0 where not evaluated or filled by early termination) |
| `empty_prefix_value` | potential of the empty response prefix (the problem's difficulty), null if not scored |
| `is_cliff`, `cliff_category` | per token: a cliff at token i (p[i-1] → p[i] fails the protocol's test); its category (deterministic, uncertain, sampled_off, other) or null |

Positions are 0-based over response tokens. Early-terminated positions (20 consecutive zeros) carry
value 0 with `num_rollouts` 0. Load with `datasets.load_from_disk("<this folder>")`.
"""


POTENTIAL_FEATURES = {
    "trace_id": "string", "problem_id": "string", "dataset": "string", "question": "string", "answer": "string",
    "prompt_ids": ["int32"], "response_ids": ["int32"], "response_text": "string", "is_correct": "bool",
    "values": ["float64"], "num_rollouts": ["int32"], "num_correct": ["int32"], "empty_prefix_value": "float64",
    "is_cliff": ["bool"], "cliff_category": ["string"],
}


def _features():
    import datasets

    return datasets.Features({name: datasets.Sequence(datasets.Value(kind[0])) if isinstance(kind, list)
                              else datasets.Value(kind) for name, kind in POTENTIAL_FEATURES.items()})


def potential_rows(root: Path, counts: dict | None = None, problems_root: Path | None = None):
    """The export's rows (one per trace with potentials, in trace id order), streamed: potentials and
    traces are read a chunk of whole traces at a time (`cliffdata.scan`), so a 10^8-row potentials
    file is never in memory. `counts`, when given, is filled with the card's counts as rows go by. The
    problems are read under `problems_root` when given (a study model's root: the project's)."""
    from cliffdata.scan import KeyedStream, TraceCoder, read_columns, source_batches

    root = Path(root)
    paths = {name: root / schema.PATHS[name] for name in ("traces", "potentials", "problems", "cliffs")}
    if problems_root is not None:
        paths["problems"] = Path(problems_root) / schema.PATHS["problems"]
    problems = {p["problem_id"]: p for p in schema.read("problems", paths["problems"]).to_pylist()}
    cliff_at = {(c["trace_id"], c["token_index"]): c["category"]
                for c in schema.read("cliffs", paths["cliffs"]).select(["trace_id", "token_index", "category"]).to_pylist()}
    coder = TraceCoder(read_columns(paths["traces"], ["trace_id"])["trace_id"], "traces")
    pots = KeyedStream(source_batches(paths["potentials"], ["trace_id", "token_index", "mode", "num_rollouts",
                                                            "num_correct", "potential"]), coder, "potentials")
    traces = KeyedStream(source_batches(paths["traces"], list(schema.TRACES.names)), coder, "traces", index=None)
    counts = {} if counts is None else counts
    counts.update(num_traces=0, num_correct=0, num_failed=0, num_ungradable=0, num_tokens=0, num_labelled=0,
                  num_cliffs=len(cliff_at))
    modes, n_values = set(), set()
    for chunk in pots.chunks():
        rows_of = {t["trace_id"]: t for t in traces.take_until(chunk.last_code).table.to_pylist()}
        table = chunk.table.to_pydict()
        modes.update(table["mode"])
        n_values.update(n for n in table["num_rollouts"] if n > 0)
        starts = np.flatnonzero(np.r_[True, chunk.codes[1:] != chunk.codes[:-1]])
        for lo, hi in zip(starts, np.r_[starts[1:], len(chunk.codes)]):
            trace_id = coder.trace_id(int(chunk.codes[lo]))
            t = rows_of[trace_id]
            T = len(t["response_ids"])
            values: list[float | None] = [None] * T
            n, k = [0] * T, [0] * T
            empty = None
            for j in range(lo, hi):
                i, ni, ki, p = (table[c][j] for c in ("token_index", "num_rollouts", "num_correct", "potential"))
                if i == -1:
                    empty = float(p) if ni > 0 else None
                elif 0 <= i < T:
                    values[i], n[i], k[i] = float(p), int(ni), int(ki)
            problem = problems.get(t["problem_id"], {})
            counts["num_traces"] += 1
            counts["num_correct" if t["is_correct"] is True else "num_failed" if t["is_correct"] is False
                   else "num_ungradable"] += 1
            counts["num_tokens"] += T
            counts["num_labelled"] += sum(v is not None for v in values)
            yield {"trace_id": trace_id, "problem_id": t["problem_id"], "dataset": problem.get("dataset"),
                   "question": problem.get("question"), "answer": problem.get("answer"),
                   "prompt_ids": t["prompt_ids"], "response_ids": t["response_ids"],
                   "response_text": t["response_text"], "is_correct": t["is_correct"], "values": values,
                   "num_rollouts": n, "num_correct": k, "empty_prefix_value": empty,
                   "is_cliff": [(trace_id, i) in cliff_at for i in range(T)],
                   "cliff_category": [cliff_at.get((trace_id, i)) for i in range(T)]}
    counts["modes"] = ", ".join(sorted(modes)) or "none"
    counts["n_values"] = ", ".join(str(v) for v in sorted(n_values)) or "none"


def export_potentials(root: Path, out: Path, title: str = "cliffdata token-level value labels",
                      problems_root: Path | None = None) -> dict:
    """Save the potentials dataset under `out` (`save_to_disk`) with a dataset card; returns its counts.

    The rows stream from `potential_rows` into Arrow shards of a writer (datasets' own ArrowWriter,
    a temp folder), so the export's memory does not grow with the dataset."""
    import datasets
    from datasets.arrow_writer import ArrowWriter

    counts: dict = {}
    features = _features()

    def build(folder: Path) -> None:
        with tempfile.TemporaryDirectory(prefix="cliffdata-export-") as tmp:
            arrow = Path(tmp) / "potentials.arrow"
            with ArrowWriter(features=features, path=str(arrow), writer_batch_size=1000) as writer:
                for row in potential_rows(Path(root), counts, problems_root):
                    writer.write(row)
                writer.finalize()
            datasets.Dataset.from_file(str(arrow)).save_to_disk(str(folder))
        (folder / "README.md").write_text(CARD.format(title=title, **counts), encoding="utf-8")

    write_folder(Path(out), build, FOLDER_MARKER, WRITTEN_BY)
    log.info("potentials: %d traces, %d labelled positions -> %s", counts["num_traces"], counts["num_labelled"], out)
    return counts


def read_pairs(path: Path) -> pa.Table:
    """The Cliff-DPO pairs file (any table with prompt_ids, chosen_id, rejected_id)."""
    if not Path(path).exists():
        raise ValueError(f"no pairs at {path}; run the dpo_pairs stage first")
    return pq.read_table(path)
