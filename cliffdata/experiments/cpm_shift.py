"""CPM shift (protocol §5, RQ3): another model with the identical tokenizer reads the source model's exact
prefix ids at each of the source's cliffs, and the cliff probability mass is recomputed over the
source's cliff set C (the candidates that are cliffs relative to p_prev, the sampled cliff token
included):

    cpm_eval = Σ_{c ∈ C} p_eval(c | prefix),  tokens outside the eval model's top-k count 0
    ΔCPM     = cpm_eval − cpm_source

One teacher-forced pass per unique prefix (`prompt_ids + response_ids[:i]`), T = 1, no top-p, like the
token statistics (protocol §4). Models whose tokenizers differ are refused: the ids would not mean the
same tokens.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from cliffdata.generate.token_stats import tie_aware_rank

SAMPLE_SENTENCE = "Tom has 13 pens and gets 8 more, so 13 + 8 = 21 pens.\n#### 21 \\boxed{21} ∑ café"


def check_same_tokenizer(source, other, source_name: str = "source", other_name: str = "eval") -> None:
    """Raise ValueError naming the failed check unless both tokenizers agree on vocabulary size, special
    token ids and the ids of a sample sentence."""
    if len(source) != len(other):
        raise ValueError(f"tokenizer mismatch (vocab size): {source_name} has {len(source)} tokens, "
                         f"{other_name} has {len(other)}")
    for attr in ("bos_token_id", "eos_token_id", "pad_token_id", "unk_token_id"):
        a, b = getattr(source, attr, None), getattr(other, attr, None)
        if a != b:
            raise ValueError(f"tokenizer mismatch (special ids): {attr} is {a} for {source_name}, {b} for {other_name}")
    a_special = dict(zip(source.all_special_tokens, source.all_special_ids))
    b_special = dict(zip(other.all_special_tokens, other.all_special_ids))
    if a_special != b_special:
        raise ValueError(f"tokenizer mismatch (special ids): {source_name} {a_special} vs {other_name} {b_special}")
    a_ids = source.encode(SAMPLE_SENTENCE, add_special_tokens=False)
    b_ids = other.encode(SAMPLE_SENTENCE, add_special_tokens=False)
    if a_ids != b_ids:
        raise ValueError(f"tokenizer mismatch (sample sentence ids): {SAMPLE_SENTENCE!r} encodes to {a_ids[:12]}… "
                         f"with {source_name} and {b_ids[:12]}… with {other_name}")


def source_inputs(root: Path, use: str) -> dict:
    """What `cpm_shift_rows` reads of a source model, from the datasets under `root`: its traces, its
    selected cliffs (`cliffs.use`), candidates, and token_stats rows (rank) at those cliffs."""
    from cliffdata import schema
    from cliffdata.cliffs.select import read_selected_cliffs

    root = Path(root)
    cliffs = read_selected_cliffs(use, root)
    keys = {(c["trace_id"], c["token_index"]) for c in cliffs}
    stats = {(s["trace_id"], s["token_index"]): s for s in schema.read(
        "token_stats", root / schema.PATHS["token_stats"]).select(["trace_id", "token_index", "rank"]).to_pylist()
        if (s["trace_id"], s["token_index"]) in keys}
    return {"traces": schema.read("traces", root / schema.PATHS["traces"]).to_pylist(), "cliffs": cliffs,
            "candidates": schema.read("candidates", root / schema.PATHS["candidates"]).to_pylist(), "stats": stats}


def cliff_sets(candidates: Sequence[dict]) -> dict[tuple[str, int], dict]:
    """Per cliff (trace_id, token_index): the cliff set C {candidate_id: source prob} and the cliff token."""
    out: dict[tuple[str, int], dict] = {}
    for c in candidates:
        cell = out.setdefault((c["trace_id"], c["token_index"]), {"members": {}, "cliff_token": None})
        if c["is_cliff"]:
            cell["members"][int(c["candidate_id"])] = float(c["prob"])
        if c["is_cliff_token"]:
            cell["cliff_token"] = int(c["candidate_id"])
    for key, cell in out.items():
        if cell["cliff_token"] is None:
            raise ValueError(f"cliff {key}: the candidates have no row for the cliff token")
    return out


@torch.inference_mode()
def next_token_top(model, contexts: Sequence[Sequence[int]], pad_id: int, top_k: int,
                   batch_size: int = 16) -> list[dict]:
    """The top-k next-token distribution (T = 1) after each context: ids, probs, logprob of all."""
    from cliffdata.dpo.train import next_token_logprobs

    out = []
    for s in range(0, len(contexts), batch_size):
        logp = next_token_logprobs(model, contexts[s:s + batch_size], pad_id).double()          # (B, V)
        top_lp, top_ids = logp.topk(top_k, dim=-1)
        for b in range(logp.shape[0]):
            out.append({"top_ids": top_ids[b].tolist(), "top_logprobs": top_lp[b], "logp": logp[b]})
    return out


def cpm_shift_rows(source_name: str, eval_name: str, model, pad_id: int, traces: Sequence[dict],
                   cliffs: Sequence[dict], candidates: Sequence[dict], source_stats: dict[tuple[str, int], dict],
                   top_k: int) -> list[dict]:
    """Rows of CPM_SHIFT for every source cliff, read by `model` (the eval model) at the same prefix.

    `source_stats[(trace_id, i)]` is the source's token_stats row at the cliff (rank of the cliff token).
    """
    by_trace = {t["trace_id"]: t for t in traces}
    sets = cliff_sets(candidates)
    ordered = sorted(cliffs, key=lambda c: (c["trace_id"], c["token_index"]))
    contexts = []
    for c in ordered:
        t = by_trace[c["trace_id"]]
        contexts.append(list(t["prompt_ids"]) + list(t["response_ids"][:c["token_index"]]))
    tops = next_token_top(model, contexts, pad_id, top_k)
    rows = []
    for c, top in zip(ordered, tops):
        key = (c["trace_id"], c["token_index"])
        if key not in sets:
            raise ValueError(f"cliff {key} has no candidates (run the candidates stage first)")
        cell = sets[key]
        in_top = {tid: float(lp.exp()) for tid, lp in zip(top["top_ids"], top["top_logprobs"])}
        cliff_token = cell["cliff_token"]
        token_lp = top["logp"][cliff_token]
        rank_eval = int(tie_aware_rank(token_lp[None], top["top_logprobs"][None])[0])
        top_p = top["top_logprobs"].exp()
        cpm_source = sum(cell["members"].values())
        cpm_eval = sum(in_top.get(tid, 0.0) for tid in cell["members"])
        rows.append({"source_model": source_name, "eval_model": eval_name, "trace_id": c["trace_id"],
                     "token_index": c["token_index"], "category": c["category"], "num_cliff_set": len(cell["members"]),
                     "cpm_source": cpm_source, "cpm_eval": cpm_eval, "delta_cpm": cpm_eval - cpm_source,
                     "rank_source": int(source_stats[key]["rank"]), "rank_eval": rank_eval,
                     "entropy_eval": float(-(top_p * top["top_logprobs"]).sum()), "is_greedy_eval": rank_eval == 1})
    return rows


def study_pairs(names: Sequence[str], tokenizers: dict) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """Every ordered pair (source, eval) of distinct models whose tokenizers agree (`check_same_tokenizer`),
    in study order, both directions; and the refused pairs, `"a -> b"`: the failed check's message."""
    pairs, refused = [], {}
    for a in names:
        for b in names:
            if a == b:
                continue
            try:
                check_same_tokenizer(tokenizers[a], tokenizers[b], a, b)
            except ValueError as e:
                refused[f"{a} -> {b}"] = str(e)
            else:
                pairs.append((a, b))
    return pairs, refused
