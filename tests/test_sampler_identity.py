"""The sampler identity: p[i-1] = Σ_v π_s(v | prefix) · p(prefix + v), with π_s the
rollout sampler's distribution as `token_stats` computes it (`sampler_prob`), and π_s against what
the engines really sample (first-token frequencies, chi-square).

The scripted world: a 4-token vocabulary (0, 1, 2 and EOS = 3), next-token logits a fixed function
of the sequence so far, EOS forced at a total length cap (so no budget binds), and a deterministic
grader. Potentials are enumerated exactly over every complete continuation, with a sampler written
here from the definition (numpy), independent of the project's torch code.
"""
from __future__ import annotations

import itertools
import zlib
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy import stats as sps

from cliffdata.backends import Sampling, make_backend
from cliffdata.backends.base import GenerationRequest
from cliffdata.generate.token_stats import compute_token_stats, sampler_logprobs
from test_backends import HAS_VLLM

VOCAB, EOS, MAX_LEN = 4, 3, 6
PROMPT = [0, 1]


def world_logits(seq: tuple[int, ...]) -> np.ndarray:
    """Next-token logits after `seq` (prompt + response): seeded by the sequence; EOS forced at the cap."""
    if len(seq) - len(PROMPT) >= MAX_LEN:
        return np.array([-np.inf, -np.inf, -np.inf, 0.0])
    rng = np.random.default_rng(zlib.crc32(bytes(seq)))
    return rng.normal(0, 1.5, VOCAB)


def reference_sampler(logits: np.ndarray, s: Sampling) -> np.ndarray:
    """π_s from the definition: T, then top-k (ties at the k-th kept), then top-p (a token stays while
    the mass ranked above it is < top_p), renormalised. T = 0: the argmax."""
    if s.temperature == 0:
        out = np.zeros(len(logits))
        out[int(np.argmax(logits))] = 1.0
        return out
    x = logits / s.temperature
    if 0 < s.top_k < len(x):
        x = np.where(x >= np.sort(x)[::-1][s.top_k - 1], x, -np.inf)
    p = np.exp(x - x.max())
    p /= p.sum()
    if s.top_p < 1:
        order = np.argsort(-p, kind="stable")
        above = np.cumsum(p[order]) - p[order]
        keep = np.zeros(len(p), dtype=bool)
        keep[order] = above < s.top_p
        p = np.where(keep, p, 0.0)
        p /= p.sum()
    return p


def grade(response: tuple[int, ...]) -> bool:
    body = [t for t in response if t != EOS]
    return body.count(1) - body.count(2) >= 1


def potential(response: tuple[int, ...], s: Sampling) -> float:
    """P(correct | response so far), summed over every complete continuation and its path probability."""
    if response and response[-1] == EOS:
        return float(grade(response))
    total = 0.0
    for n_more in range(1, MAX_LEN - len(response) + 2):
        for cont in itertools.product(range(VOCAB), repeat=n_more):
            if EOS in cont[:-1] or (cont[-1] != EOS and len(response) + n_more <= MAX_LEN):
                continue                      # a complete continuation ends at its first EOS
            prob, seq = 1.0, tuple(PROMPT) + response
            for t in cont:
                prob *= reference_sampler(world_logits(seq), s)[t]
                seq += (t,)
                if prob == 0:
                    break
            total += prob * grade(response + cont)
    return total


class ScriptedModel:
    """Stands in for the HF model in `compute_token_stats`: logits from `world_logits`."""
    device = torch.device("cpu")

    def __call__(self, input_ids, logits_to_keep):
        ids = input_ids[0].tolist()
        rows = [world_logits(tuple(ids[:j + 1])) for j in range(len(ids))]
        logits = torch.tensor(np.array(rows), dtype=torch.float64)[None, -logits_to_keep:]
        return SimpleNamespace(logits=logits.nan_to_num(neginf=-1e30))


SETTINGS = [Sampling(1.0), Sampling(0.7, top_p=0.9), Sampling(1.3, top_k=2), Sampling(0.5, top_k=3, top_p=0.8),
            Sampling(0.0)]


@pytest.mark.parametrize("sampling", SETTINGS, ids=lambda s: f"T{s.temperature}-k{s.top_k}-p{s.top_p}")
def test_identity_holds_exactly_with_the_projects_sampler_prob(sampling):
    trace = (1, 0, 1, 2)
    (row0, *rows) = compute_token_stats(ScriptedModel(), [{"trace_id": "t", "prompt_ids": PROMPT,
                                                           "response_ids": list(trace)}], 3, sampling)
    stats = [row0, *rows]
    for i, tok in enumerate(trace):
        prefix = trace[:i]
        logits = torch.tensor(world_logits(tuple(PROMPT) + prefix))[None].nan_to_num(neginf=-1e30)
        pi = sampler_logprobs(logits, sampling)[0].exp().numpy()
        np.testing.assert_allclose(pi, reference_sampler(world_logits(tuple(PROMPT) + prefix), sampling), atol=1e-12)
        assert stats[i]["sampler_prob"] == pytest.approx(pi[tok], abs=1e-12)
        p_prev = potential(prefix, sampling)
        p_next = {v: potential(prefix + (v,), sampling) for v in range(VOCAB)}
        assert p_prev == pytest.approx(sum(pi[v] * p_next[v] for v in range(VOCAB)), abs=1e-9)
        # the bound a cliff cannot beat: p[i-1] − p[i] <= (1 − π_s(a_i)) · (1 − p[i]) <= max_drop
        drop = p_prev - p_next[tok]
        assert drop <= (1 - stats[i]["sampler_prob"]) * (1 - p_next[tok]) + 1e-9
        assert drop <= stats[i]["max_drop"] + 1e-9


def sharp_model_dir(tiny_model_dir, tmp_path, tiny_tokenizer):
    """The tiny model with its final norm scaled, so the next-token distribution has a few likely
    tokens (the random init is near uniform, which a chi-square cannot tell apart from anything)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    with torch.no_grad():
        model.model.norm.weight.mul_(4.0)
    model.save_pretrained(tmp_path)
    tiny_tokenizer.save_pretrained(tmp_path)
    return tmp_path, model


ENGINE_PREFIXES = [(1, 24, 22, 8), (1, 40, 41), (1, 24, 22, 8, 21, 78)]
ENGINE_SETTINGS = [Sampling(0.8, top_p=0.9, max_new_tokens=1), Sampling(1.2, top_k=4, max_new_tokens=1)]
ROLLOUTS_PER_PREFIX = 700                     # 3 prefixes x 700 = 2,100 rollouts per setting


def first_token_chi_square(backend, model, sampling: Sampling) -> list[float]:
    """Per prefix: the chi-square p-value of the sampled first tokens against π_s (bins with an
    expected count < 5 pooled); a token π_s excludes must never be drawn."""
    reqs = [GenerationRequest(p, n=ROLLOUTS_PER_PREFIX, seed=17 + j) for j, p in enumerate(ENGINE_PREFIXES)]
    out = []
    for prefix, gen in zip(ENGINE_PREFIXES, backend.generate(reqs, sampling)):
        with torch.inference_mode():
            logits = model(input_ids=torch.tensor([prefix])).logits[0, -1:]
        pi = sampler_logprobs(logits, sampling)[0].exp().numpy()
        counts = np.bincount([g[0] for g in gen.token_ids], minlength=len(pi))
        assert counts[pi == 0].sum() == 0, f"tokens outside the sampler's support drawn after {prefix}"
        expected = pi * counts.sum()
        big = expected >= 5
        obs = np.append(counts[big], counts[~big].sum())
        exp = np.append(expected[big], expected[~big].sum())
        obs, exp = (obs, exp) if exp[-1] > 0 else (obs[:-1], exp[:-1])
        assert len(obs) >= 3, "the sharpened model should still leave a few likely tokens"
        out.append(float(sps.chisquare(obs, exp * obs.sum() / exp.sum()).pvalue))
    return out


@pytest.mark.parametrize("sampling", ENGINE_SETTINGS, ids=["T0.8-p0.9", "T1.2-k4"])
def test_hf_backend_samples_sampler_prob(sampling, tiny_model_dir, tiny_tokenizer, tmp_path):
    folder, model = sharp_model_dir(tiny_model_dir, tmp_path, tiny_tokenizer)
    backend = make_backend("hf", str(folder), dtype="float32", max_batch=8)
    try:
        pvalues = first_token_chi_square(backend, model, sampling)
    finally:
        backend.close()
    assert min(pvalues) > 0.001, pvalues


@pytest.mark.slow
@pytest.mark.skipif(not HAS_VLLM, reason="vllm cannot be imported here")
def test_vllm_cpu_samples_sampler_prob(tiny_model_dir, tiny_tokenizer, tmp_path):
    folder, model = sharp_model_dir(tiny_model_dir, tmp_path, tiny_tokenizer)
    backend = make_backend("vllm", str(folder), dtype="float32", seed=0, enforce_eager=True, max_model_len=256)
    try:
        pvalues = [p for s in ENGINE_SETTINGS for p in first_token_chi_square(backend, model, s)]
    finally:
        backend.close()
    assert min(pvalues) > 0.001, pvalues
