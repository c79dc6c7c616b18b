"""Teacher-forced token statistics on the raw distribution (T = 1, no top-p), protocol §4.

For each response token: its logprob, tie-aware rank in the top-20 (every token within 1e-9 of a
higher logprob is not counted as higher; absent → 21), the top-20 entropy −Σ p log p over the top-20
only (not renormalised, nats), the full-vocabulary entropy, the greedy token, and the top-20 ids and
probabilities (the CPM work reads them later).

Beside the raw distribution, `sampler_prob` is π_s(a_i): the probability the *rollout sampler*
(`rollouts.sampling`) gives the trace's token, computed exactly as the backends sample: logits / T,
then top-k (keep the k largest logits, ties at the k-th kept), then top-p on the renormalised top-k
(a token stays while the mass of the tokens ranked above it is < top_p; the first always stays),
then softmax (`backends.hf.filter_logits`, the same order as vLLM's sampler). T = 0 is greedy:
π_s = 1 for the argmax, 0 otherwise. For this π_s the potential obeys

    p[i-1] = Σ_v π_s(v | prefix) · p(prefix + v)   ⇒   p[i-1] − p[i] ≤ (1 − π_s(a_i)) · (1 − p[i])

so `max_drop = 1 − sampler_prob` bounds the true drop a token can carry. What breaks the identity:
a rollout sampler other than the one described (presence/repetition penalties, min-p, logit bias,
a different dtype or kernel than this pass: bf16 rollouts vs this float pass differ by rounding),
and a max-token budget that binds (a rollout cut at the budget one token later is not the same
random variable), and grading that looks at text the continuation does not produce.
"""
from __future__ import annotations

import torch
from tqdm.auto import tqdm

from cliffdata.backends.base import Sampling
from cliffdata.backends.hf import filter_logits

TIE_TOL = 1e-9
ABSENT_RANK = 21


def tie_aware_rank(token_logprob: torch.Tensor, top_logprobs: torch.Tensor) -> torch.Tensor:
    """Rank of each token among its top-k logprobs (B,) given (B, k); ties within 1e-9 share a rank."""
    higher = (top_logprobs > token_logprob[:, None] + TIE_TOL).sum(-1)
    present = token_logprob >= top_logprobs[:, -1] - TIE_TOL
    return torch.where(present, higher + 1, torch.full_like(higher, ABSENT_RANK))


def sampler_logprobs(logits: torch.Tensor, sampling: Sampling) -> torch.Tensor:
    """log π_s over the vocabulary, (t, V) from raw (t, V) logits: the rollout sampler's distribution."""
    logits = logits.double()
    if sampling.temperature == 0:
        greedy = torch.full_like(logits, float("-inf"))
        return greedy.scatter(-1, logits.argmax(-1, keepdim=True), 0.0)
    return filter_logits(logits / sampling.temperature, sampling.top_k, sampling.top_p).log_softmax(-1)


@torch.inference_mode()
def trace_token_stats(model, prompt_ids: list[int], response_ids: list[int], top_k: int, sampling: Sampling,
                      chunk: int = 512) -> dict[str, list]:
    """Column lists for one trace, one entry per response token."""
    ids = torch.tensor([list(prompt_ids) + list(response_ids)], device=model.device)
    T = len(response_ids)
    # logits at positions P-1 … P+T-2 predict the response tokens (the model's own head, soft-capping included)
    logits = model(input_ids=ids, logits_to_keep=T + 1).logits[0, :-1]               # (T, V)
    cols: dict[str, list] = {k: [] for k in ("logprob", "rank", "entropy", "entropy_full", "greedy_token_id",
                                             "top_ids", "top_probs", "sampler_prob")}
    targets = torch.tensor(response_ids, device=model.device)
    for s in range(0, T, chunk):                       # bound the (T, V) float64 buffer for long traces
        logp = logits[s:s + chunk].double().log_softmax(-1)                          # (t, V)
        tok = targets[s:s + chunk]
        tok_lp = logp.gather(-1, tok[:, None]).squeeze(-1)                          # (t,)
        top_lp, top_ids = logp.topk(top_k, dim=-1)                                   # (t, k)
        top_p = top_lp.exp()
        cols["logprob"] += tok_lp.tolist()
        cols["rank"] += tie_aware_rank(tok_lp, top_lp).tolist()
        cols["entropy"] += (-(top_p * top_lp).sum(-1)).tolist()
        cols["entropy_full"] += (-(logp.exp() * logp).sum(-1)).tolist()
        cols["greedy_token_id"] += top_ids[:, 0].tolist()
        cols["top_ids"] += top_ids.tolist()
        cols["top_probs"] += top_p.float().tolist()
        cols["sampler_prob"] += sampler_logprobs(logits[s:s + chunk], sampling).gather(
            -1, tok[:, None]).squeeze(-1).exp().tolist()
    return cols


def compute_token_stats(model, traces: list[dict], top_k: int, sampling: Sampling, desc: str = "token_stats") -> list[dict]:
    """Rows of `schema.TOKEN_STATS` for every response token of every trace; `sampling` is the
    rollout sampler (`rollouts.sampling`) whose π_s gives `sampler_prob`."""
    rows = []
    for t in tqdm(traces, desc=desc, unit="trace"):
        if not t["response_ids"]:
            continue
        cols = trace_token_stats(model, t["prompt_ids"], t["response_ids"], top_k, sampling)
        for i, token_id in enumerate(t["response_ids"]):
            rows.append({"trace_id": t["trace_id"], "token_index": i, "token_id": token_id,
                         "logprob": cols["logprob"][i], "rank": cols["rank"][i], "entropy": cols["entropy"][i],
                         "entropy_full": cols["entropy_full"][i], "greedy_token_id": cols["greedy_token_id"][i],
                         "is_greedy": cols["rank"][i] == 1, "top_ids": cols["top_ids"][i],
                         "top_probs": cols["top_probs"][i], "sampler_prob": cols["sampler_prob"][i],
                         "max_drop": 1.0 - cols["sampler_prob"][i]})
    return rows
