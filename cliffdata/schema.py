"""The pyarrow schema of every dataset, used on every write and read.

Positions are 0-based response-token indices (`token_index`); the empty prefix (problem difficulty)
is stored as `token_index = -1` (protocol §1). Writes are atomic (temp file + rename) and
byte-stable: rows are sorted by the dataset's key before writing, and no timestamps are stored.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

ids = pa.list_(pa.int32())
# Rows per Parquet row group of every dataset written here (pyarrow's own default, made explicit):
# readers stream a large file one row group at a time.
ROW_GROUP_ROWS = 1 << 20

PROBLEMS = pa.schema([
    ("problem_id", pa.string()),       # stable: "<dataset>/<source id or row index>"
    ("dataset", pa.string()),          # gsm8k | gsm1k | math500 | aime | arith
    ("question", pa.string()),
    ("answer", pa.string()),           # gold answer, as a string for the grader
    ("answer_format", pa.string()),    # hash | boxed: where the grader looks in a response
    ("prompt", pa.string()),           # name of the prompt in params `prompts`
    ("family", pa.string()),           # generator family / subject; null for loaded sets
    ("level", pa.string()),            # MATH level; null elsewhere
    ("source_index", pa.int64()),      # row (0-based) in the source file
    ("max_new_tokens", pa.int32()),    # the source's token budget (problems.sources[].max_new_tokens); null: each stage's own
])

TRACES = pa.schema([
    ("trace_id", pa.string()),         # "<problem_id>#<sample_index>"
    ("problem_id", pa.string()),
    ("sample_index", pa.int32()),
    ("prompt_ids", ids),               # chat-templated prompt, exact ids
    ("response_ids", ids),             # exact sampled ids (never re-tokenised)
    ("response_text", pa.string()),
    ("extracted_answer", pa.string()),
    ("is_correct", pa.bool_()),        # null = ungradable
    ("finish_reason", pa.string()),    # stop | length
    ("num_tokens", pa.int32()),
])

TOKEN_STATS = pa.schema([
    ("trace_id", pa.string()),
    ("token_index", pa.int32()),
    ("token_id", pa.int32()),
    ("logprob", pa.float64()),
    ("rank", pa.int32()),              # tie-aware rank in the top-20; 21 = absent (protocol §4)
    ("entropy", pa.float64()),         # -sum p log p over the top-20, not renormalised, nats
    ("entropy_full", pa.float64()),    # full-vocabulary entropy, nats
    ("greedy_token_id", pa.int32()),
    ("is_greedy", pa.bool_()),         # rank == 1
    ("top_ids", ids),                  # top-20 ids, by descending probability
    ("top_probs", pa.list_(pa.float32())),
    ("sampler_prob", pa.float64()),    # π_s(token) under rollouts.sampling (T, top-k, top-p as the engines apply them)
    ("max_drop", pa.float64()),        # 1 - sampler_prob: the largest true drop the token can carry
])

POTENTIALS = pa.schema([
    ("trace_id", pa.string()),
    ("token_index", pa.int32()),       # -1 = empty prefix; i = after response token i
    ("mode", pa.string()),             # exhaustive | adaptive
    ("num_rollouts", pa.int32()),      # 0 for positions filled by early termination
    ("num_correct", pa.int32()),
    ("potential", pa.float64()),       # num_correct / num_rollouts (0 where filled)
    ("is_filled", pa.bool_()),         # early termination filled this position with 0
    ("num_generated_tokens", pa.int64()),
])

ROLLOUT_TRACES = pa.schema([
    ("trace_id", pa.string()),
    ("num_positions", pa.int32()),     # positions evaluated (not filled)
    ("num_rollouts", pa.int64()),
    ("num_generated_tokens", pa.int64()),
    ("wall_seconds", pa.float64()),    # not byte-stable: kept out of potentials on purpose
    ("early_stop_index", pa.int32()),  # first filled position, null if none
    ("num_grading_timeouts", pa.int64()),  # rollouts whose answer ran past grading.timeout_seconds (ungradable)
])

CLIFFS = pa.schema([
    ("trace_id", pa.string()),
    ("problem_id", pa.string()),
    ("token_index", pa.int32()),
    ("token_id", pa.int32()),
    ("is_correct", pa.bool_()),        # correctness of the trace
    ("p_prev", pa.float64()),
    ("potential", pa.float64()),
    ("num_rollouts_prev", pa.int32()),
    ("num_rollouts", pa.int32()),
    ("delta", pa.float64()),           # p_prev - potential
    ("is_first", pa.bool_()),
    ("relative_position", pa.float64()),  # token_index / num_tokens
    ("third", pa.string()),            # early | mid | late
    ("entropy", pa.float64()),         # the entropy the taxonomy used
    ("rank", pa.int32()),
    ("is_greedy", pa.bool_()),
    ("category", pa.string()),         # deterministic | uncertain | sampled_off | other
    ("p_value", pa.float64()),         # one-sided, H0: delta <= delta0, the protocol's unpooled z
    ("max_drop", pa.float64()),        # 1 - sampler_prob of the cliff token: the largest true drop it can carry
    ("feasible", pa.bool_()),          # max_drop >= the smallest drop the test detects at this pair's N
    ("fdr_significant", pa.bool_()),   # Benjamini-Hochberg at cliffs.fdr_q over the dataset's tested pairs; null: off
])

TRACE_CLIFFS = pa.schema([
    ("trace_id", pa.string()),
    ("problem_id", pa.string()),
    ("is_correct", pa.bool_()),
    ("num_tokens", pa.int32()),
    ("num_scored", pa.int32()),        # positions with a cliff test (both sides scored)
    ("num_cliffs", pa.int32()),
    ("first_cliff_index", pa.int32()),
    ("critical_index", pa.int32()),    # Lin et al. critical token, null if none
    ("num_feasible", pa.int32()),      # tested positions whose token can carry a detectable drop (max_drop >= delta_min)
    ("expected_false_cliffs", pa.float64()),  # sum over tested pairs of P(test fires | one shared potential, the pair's total)
    ("false_cliffs_variance", pa.float64()),  # sum of q(1 - q): the variance of the false-cliff count under that null
    # the histogram of those q over the tested pairs (q > 0), ascending: the count's exact (Poisson-binomial) law
    ("null_fire_cells", pa.list_(pa.struct([("q", pa.float64()), ("num_pairs", pa.int32())]))),
])

REPLICATE = pa.schema([
    ("trace_id", pa.string()),
    ("problem_id", pa.string()),
    ("token_index", pa.int32()),       # the cliff (data/cliffs/cliffs.parquet)
    ("is_correct", pa.bool_()),        # correctness of the trace
    ("category", pa.string()),         # the cliff's category
    ("feasible", pa.bool_()),          # the cliff's feasibility (the sampler identity)
    ("num_rollouts_prev", pa.int32()), # fresh rollouts from response_ids[:i] (p[i-1])
    ("num_correct_prev", pa.int32()),
    ("num_rollouts", pa.int32()),      # fresh rollouts from response_ids[:i+1] (p[i])
    ("num_correct", pa.int32()),
    ("p_prev", pa.float64()),
    ("potential", pa.float64()),
    ("delta", pa.float64()),
    ("p_value", pa.float64()),         # the cliff test's one-sided p-value on the fresh counts
    ("replicated", pa.bool_()),        # the cliff test passes again on the fresh counts
    ("num_generated_tokens", pa.int64()),
])

ABLATION = pa.schema([
    ("trace_id", pa.string()),
    ("token_index", pa.int32()),       # del/keep: the cliff; the other arms: the deleted position
    ("arm", pa.string()),              # del | keep | critical_del | random_del | matched_del | matched_keep | del_resilient
    ("is_first", pa.bool_()),          # the (matched) cliff is its trace's first; null for critical_del/random_del
    ("is_correct", pa.bool_()),        # correctness of the trace
    ("prefix_length", pa.int32()),     # response tokens kept: i+1 (keep, matched_keep), token_index (the others)
    ("cliff_trace_id", pa.string()),   # matched arms: the cliff this control position stands beside; else null
    ("cliff_index", pa.int32()),       # matched arms: that cliff's token_index; else null
    ("num_rollouts", pa.int32()),
    ("num_correct", pa.int32()),
    ("potential", pa.float64()),       # num_correct / num_rollouts
    ("num_reemitted", pa.int32()),     # del: continuations whose first token is the cliff token again; else null
    ("num_generated_tokens", pa.int64()),  # del_resilient: 0 (its continuations are del's, counted there)
])

MATCHED_CONTROLS = pa.schema([      # ablation.matched_control: every candidate estimated for each cliff
    ("cliff_trace_id", pa.string()),   # the cliff (a failed trace's)
    ("cliff_index", pa.int32()),
    ("trace_id", pa.string()),         # the candidate position: data/sample or data/ablation/control_traces
    ("token_index", pa.int32()),
    ("source", pa.string()),           # failed | correct | ungradable (the run's traces) | pool (control_traces)
    ("relative_position", pa.float64()),  # token_index / num_tokens
    ("sampler_prob", pa.float64()),    # π_s of the token (rollouts.sampling)
    ("is_greedy", pa.bool_()),
    ("distance", pa.float64()),        # to the cliff in relative position and sampler probability, scaled
    ("num_rollouts_prev", pa.int32()), # fresh rollouts from response_ids[:token_index] (p[j-1]); null: not estimated
    ("num_correct_prev", pa.int32()),
    ("p_prev", pa.float64()),
    ("cliff_p_prev", pa.float64()),    # the cliff's p[i-1] it was matched to (replicate's fresh one where tested)
    ("is_chosen", pa.bool_()),         # the cliff's control: its matched_del / matched_keep rows are in ablation
])

PASS_AT_K = pa.schema([
    ("scope", pa.string()),            # all | first (critical_del/random_del rows count in both)
    ("correctness", pa.string()),      # correct | failed
    ("arm", pa.string()),
    ("k", pa.int32()),
    ("num_instances", pa.int32()),
    ("pass_at_k", pa.float64()),       # mean over instances of the unbiased estimator (stats.pass_at_k)
])

CANDIDATES = pa.schema([
    ("trace_id", pa.string()),
    ("token_index", pa.int32()),       # the cliff
    ("candidate_rank", pa.int32()),    # 1-based position in the stored top list; null = cliff token outside the top-k
    ("candidate_id", pa.int32()),
    ("prob", pa.float64()),            # top-20 probability (T = 1); exp(logprob) for a cliff token outside the top-k
    ("is_cliff_token", pa.bool_()),    # the sampled token (response_ids[i])
    ("is_greedy", pa.bool_()),         # candidate_id == greedy_token_id
    ("num_rollouts", pa.int32()),      # the cliff token: the main rollout's N at i; others: fresh N
    ("num_correct", pa.int32()),
    ("potential", pa.float64()),
    ("p_prev", pa.float64()),          # potential at i-1 (before the token)
    ("num_rollouts_prev", pa.int32()),
    ("num_correct_prev", pa.int32()),
    ("is_cliff", pa.bool_()),          # cliff test p_prev → potential with each side's N; true for the cliff token
    ("num_generated_tokens", pa.int64()),  # 0 for the cliff token (its rollouts are the main ones)
])

CONTROL = pa.schema([
    ("trace_id", pa.string()),
    ("problem_id", pa.string()),
    ("token_index", pa.int32()),       # the control position j: a random non-cliff, non-greedy position of the trace
    ("cliff_index", pa.int32()),       # the cliff whose pairs it mirrors (as many pairs as there)
    ("candidate_id", pa.int32()),      # the trace's token at j, or an alternative from its top-k
    ("candidate_rank", pa.int32()),    # rank in the stored top list; null: the trace token outside the top-k
    ("prob", pa.float64()),
    ("is_trace_token", pa.bool_()),
    ("num_rollouts", pa.int32()),      # fresh rollouts from response_ids[:j] + [candidate]
    ("num_correct", pa.int32()),
    ("potential", pa.float64()),
    ("num_rollouts_prev", pa.int32()), # fresh rollouts from response_ids[:j]
    ("num_correct_prev", pa.int32()),
    ("p_prev", pa.float64()),
    ("is_cliff", pa.bool_()),          # the cliff test fires between p_prev and potential (cliffs.test)
    ("num_generated_tokens", pa.int64()),
])

DPO_PAIRS = pa.schema([
    ("trace_id", pa.string()),
    ("problem_id", pa.string()),
    ("token_index", pa.int32()),       # the cliff (variant random: the control position)
    ("category", pa.string()),         # the cliff's category (deterministic | uncertain | sampled_off | other); control
    ("variant", pa.string()),          # all | deterministic | uncertain | sampled_off | uncertain_sampled_off | replicated | random
    ("strategy", pa.string()),         # cliff_1N | cliff_hard
    ("is_correct", pa.bool_()),        # correctness of the trace
    ("prompt_ids", ids),               # prompt + response[:i] (the del prefix), exact ids
    ("chosen_id", pa.int32()),         # a top-k candidate that is not a cliff relative to p_prev
    ("rejected_id", pa.int32()),       # the cliff token response_ids[i]
    ("chosen_rank", pa.int32()),
    ("rejected_rank", pa.int32()),
    ("chosen_prob", pa.float64()),
    ("rejected_prob", pa.float64()),
    ("chosen_potential", pa.float64()),
    ("rejected_potential", pa.float64()),  # the main rollout's potential at i
    ("p_prev", pa.float64()),
    ("split", pa.string()),            # train | heldout
])

DPO_TRL = pa.schema([
    ("prompt_ids", ids),
    ("chosen_ids", ids),               # one token (TRL's pre-tokenised preference format)
    ("rejected_ids", ids),
    ("split", pa.string()),
    ("trace_id", pa.string()),
    ("token_index", pa.int32()),
])

DPO_EVAL = pa.schema([
    ("model", pa.string()),            # base | adapter variant
    ("problem_id", pa.string()),
    ("response_ids", ids),             # greedy response
    ("extracted_answer", pa.string()),
    ("is_correct", pa.bool_()),        # null = ungradable
    ("num_tokens", pa.int32()),
])

CLIFF_COUNT = pa.schema([
    ("model", pa.string()),            # base | adapter variant
    ("trace_id", pa.string()),
    ("is_correct", pa.bool_()),
    ("num_tokens", pa.int32()),
    ("num_cliffs", pa.int32()),
    ("num_deterministic", pa.int32()),
    ("num_uncertain", pa.int32()),
    ("num_sampled_off", pa.int32()),
    ("num_other", pa.int32()),
    ("num_generated_tokens", pa.int64()),
])

CPM_SHIFT = pa.schema([
    ("source_model", pa.string()),
    ("eval_model", pa.string()),
    ("trace_id", pa.string()),
    ("token_index", pa.int32()),       # the source's cliff
    ("category", pa.string()),         # the source's category
    ("num_cliff_set", pa.int32()),     # |C|: candidates that are cliffs, the cliff token included
    ("cpm_source", pa.float64()),      # sum of the source's probabilities over C
    ("cpm_eval", pa.float64()),        # sum of the eval model's top-20 probabilities over C (outside: 0)
    ("delta_cpm", pa.float64()),       # cpm_eval - cpm_source
    ("rank_source", pa.int32()),       # tie-aware rank of the cliff token (21 = outside the top-20)
    ("rank_eval", pa.int32()),
    ("entropy_eval", pa.float64()),    # top-20 entropy of the eval model at the prefix
    ("is_greedy_eval", pa.bool_()),
])

RISK_LABELS = pa.schema([
    ("trace_id", pa.string()),
    ("problem_id", pa.string()),
    ("token_index", pa.int32()),       # a tested pair p[i-1] -> p[i] of the rollouts, as the cliffs scan tests it
    ("token_id", pa.int32()),
    ("is_correct", pa.bool_()),        # correctness of the trace
    ("num_rollouts_prev", pa.int32()),
    ("num_correct_prev", pa.int32()),
    ("num_rollouts", pa.int32()),
    ("num_correct", pa.int32()),
    ("p_prev", pa.float64()),
    ("potential", pa.float64()),
    ("delta", pa.float64()),           # p_prev - potential, of either sign
    ("p_value", pa.float64()),         # the cliff test's one-sided p-value
    ("is_cliff", pa.bool_()),          # the cliff test's verdict: exactly the rows of the cliffs dataset
    ("feasible", pa.bool_()),          # max_drop >= the smallest drop the test detects at the pair's N; null: no max_drop
    ("replicated", pa.bool_()),        # a cliff's replication (data/replicate); null: not a cliff, or not replicated
    # the features: none needs a rollout (token_stats, the trace's length, the teacher-forced pass)
    ("sampler_prob", pa.float64()),    # pi_s(token) under rollouts.sampling
    ("max_drop", pa.float64()),        # 1 - sampler_prob
    ("greedy_sampler_prob", pa.float64()),  # pi_s(greedy token) under rollouts.sampling
    ("logprob", pa.float64()),
    ("entropy", pa.float64()),         # top-20 entropy, nats
    ("entropy_full", pa.float64()),    # full-vocabulary entropy, nats
    ("rank", pa.int32()),              # tie-aware rank in the top-20; 21 = absent
    ("is_greedy", pa.bool_()),
    ("top_prob", pa.float64()),        # p(greedy token), T = 1
    ("margin", pa.float64()),          # p(first) - p(second) of the top list, T = 1
    ("relative_position", pa.float64()),  # token_index / num_tokens
    ("hidden_projection", pa.list_(pa.float32())),  # risk_labels.hidden: the hidden state at the token, projected; null: off
])

SCHEMAS: dict[str, pa.Schema] = {
    "problems": PROBLEMS,
    "traces": TRACES,
    "token_stats": TOKEN_STATS,
    "potentials": POTENTIALS,
    "rollout_traces": ROLLOUT_TRACES,
    "cliffs": CLIFFS,
    "trace_cliffs": TRACE_CLIFFS,
    "replicate": REPLICATE,
    "ablation": ABLATION,
    "pass_at_k": PASS_AT_K,
    "matched_controls": MATCHED_CONTROLS,
    "control_traces": TRACES,          # the traces sampled for the matched controls' pool
    "candidates": CANDIDATES,
    "control": CONTROL,
    "dpo_pairs": DPO_PAIRS,
    "dpo_trl": DPO_TRL,
    "dpo_eval": DPO_EVAL,
    "cliff_count": CLIFF_COUNT,
    "cpm_shift": CPM_SHIFT,
    "study_cpm_shift": CPM_SHIFT,      # the study's models read each other's cliffs (source/eval: study names)
    "risk_labels": RISK_LABELS,
}

KEYS: dict[str, list[str]] = {
    "problems": ["problem_id"],
    "traces": ["trace_id"],
    "token_stats": ["trace_id", "token_index"],
    "potentials": ["trace_id", "token_index"],
    "rollout_traces": ["trace_id"],
    "cliffs": ["trace_id", "token_index"],
    "trace_cliffs": ["trace_id"],
    "replicate": ["trace_id", "token_index"],
    "ablation": ["trace_id", "token_index", "arm"],
    "pass_at_k": ["scope", "correctness", "arm", "k"],
    "matched_controls": ["cliff_trace_id", "cliff_index", "trace_id", "token_index"],
    "control_traces": ["trace_id"],
    "candidates": ["trace_id", "token_index", "candidate_id"],
    "control": ["trace_id", "token_index", "candidate_id"],
    "dpo_pairs": ["trace_id", "token_index", "chosen_id"],
    "dpo_trl": ["trace_id", "token_index"],           # rows keep the pairs order within a cliff (stable sort)
    "dpo_eval": ["model", "problem_id"],
    "cliff_count": ["model", "trace_id"],
    "cpm_shift": ["source_model", "eval_model", "trace_id", "token_index"],
    "study_cpm_shift": ["source_model", "eval_model", "trace_id", "token_index"],
    "risk_labels": ["trace_id", "token_index"],
}

# Where each dataset lives under the repository root (stage folder / file).
PATHS: dict[str, str] = {
    "problems": "data/problems/problems.parquet",
    "traces": "data/sample/traces.parquet",
    "token_stats": "data/token_stats/token_stats.parquet",
    "potentials": "data/rollouts/potentials.parquet",
    "rollout_traces": "data/rollouts/rollout_traces.parquet",
    "cliffs": "data/cliffs/cliffs.parquet",
    "trace_cliffs": "data/cliffs/trace_cliffs.parquet",
    "replicate": "data/replicate/replicate.parquet",
    "ablation": "data/ablation/ablation.parquet",
    "pass_at_k": "data/ablation/pass_at_k.parquet",
    "matched_controls": "data/ablation/matched_controls.parquet",
    "control_traces": "data/ablation/control_traces.parquet",
    "candidates": "data/candidates/candidates.parquet",
    "control": "data/candidates/control.parquet",
    # one file per Cliff-DPO variant: data/dpo_pairs/<variant>.parquet (+ <variant>.trl.parquet)
    "dpo_pairs": "data/dpo_pairs/all.parquet",
    "dpo_eval": "data/dpo_eval/dpo_eval.parquet",
    "cliff_count": "data/cliff_count/cliff_count.parquet",
    "cpm_shift": "data/cpm_shift/cpm_shift.parquet",
    "study_cpm_shift": "data/study_cpm_shift/cpm_shift.parquet",
    "risk_labels": "data/risk_labels/risk_labels.parquet",
}


def to_table(name: str, rows: list[dict] | pa.Table) -> pa.Table:
    """Build a table of dataset `name` from rows (dicts), cast to its schema and sorted by its key."""
    schema = SCHEMAS[name]
    if isinstance(rows, pa.Table):
        missing = set(schema.names) - set(rows.column_names)
        if missing:
            raise ValueError(f"{name}: missing columns {sorted(missing)}")
        table = rows.select(schema.names).cast(schema)
    else:
        for i, row in enumerate(rows):
            extra = set(row) - set(schema.names)
            if extra:
                raise ValueError(f"{name}: row {i} has unknown fields {sorted(extra)}")
        table = pa.Table.from_pylist(rows, schema=schema)
    if table.num_rows:
        table = table.sort_by([(k, "ascending") for k in KEYS[name]])
    return table


def write(name: str, rows: list[dict] | pa.Table, path: str | Path) -> pa.Table:
    """Atomically write dataset `name` to `path` (Parquet, zstd), sorted by its key."""
    table = to_table(name, rows)
    write_table(table, path)
    return table


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_table(table: pa.Table, path: str | Path) -> None:
    """Write a table atomically and durably: a temp file in the same folder, fsync, rename, fsync the folder.

    The file gets the mode a plain `open()` would give it (0666 minus the umask; mkstemp's 0600 would
    hide datasets from colleagues sharing a checkout or a DVC cache).
    """
    with RowGroupWriter(path, table.schema) as writer:
        writer.write(table)


class RowGroupWriter:
    """A Parquet file written as a stream of tables, in row groups of exactly `ROW_GROUP_ROWS` rows
    (the last one shorter), atomically: the rows go to a temp file beside `path`, which replaces
    `path` on `close()` (fsync'd, folder too) and is removed by `abort()` or an exception inside a
    `with` block, so a reader never sees a partial file. The bytes depend only on the rows, not on
    how they were cut into `write` calls: the same as `write_table` of all rows at once.
    """

    def __init__(self, path: str | Path, schema: pa.Schema):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        os.close(fd)
        self._tmp = Path(tmp)
        self._schema = schema
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self._wrote = False
        self._writer = pq.ParquetWriter(tmp, schema, compression="zstd", write_statistics=True)

    def write(self, table: pa.Table | pa.RecordBatch) -> None:
        if isinstance(table, pa.RecordBatch):
            table = pa.Table.from_batches([table])
        self._pending.append(table)
        self._pending_rows += table.num_rows
        if self._pending_rows >= ROW_GROUP_ROWS:
            self._flush(final=False)

    def _flush(self, final: bool) -> None:
        table = pa.concat_tables(self._pending) if self._pending else self._schema.empty_table()
        full = table.num_rows - table.num_rows % ROW_GROUP_ROWS
        cut = table.num_rows if final else full
        if cut or (final and not self._wrote):
            self._writer.write_table(table.slice(0, cut), row_group_size=ROW_GROUP_ROWS)
            self._wrote = True
        rest = table.slice(cut)
        self._pending, self._pending_rows = ([rest] if rest.num_rows else []), rest.num_rows

    def close(self) -> None:
        """Write what is left and move the file into place."""
        try:
            self._flush(final=True)
            self._writer.close()
            os.chmod(self._tmp, 0o666 & ~_umask())
            with open(self._tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(self._tmp, self.path)
        except BaseException:
            self.abort()
            raise
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def abort(self) -> None:
        """Drop the temp file; `path` keeps what it had."""
        try:
            self._writer.close()
        except Exception:  # noqa: BLE001 - the file is being thrown away
            pass
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> RowGroupWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def read(name: str, path: str | Path) -> pa.Table:
    """Read dataset `name` from `path`, checking it against the schema."""
    table = pq.read_table(path)
    schema = SCHEMAS[name]
    missing = set(schema.names) - set(table.column_names)
    if missing:
        raise ValueError(f"{path}: not a {name} dataset, missing columns {sorted(missing)}")
    return table.select(schema.names).cast(schema)


def tree_digest(folder: str | Path) -> str:
    """sha256 over every file under `folder` (relative path and content digest, sorted): a model's weights,
    config and tokenizer in one value, for checkpoint fingerprints."""
    folder = Path(folder)
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(f"{path.relative_to(folder).as_posix()}\0{file_digest(path)}\n".encode())
    return h.hexdigest()


def file_digest(path: str | Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes (provenance, checkpoint fingerprints, MLflow dataset tags)."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
