"""Teacher-forced token statistics against direct computation on the tiny model."""
from __future__ import annotations


import pytest
import torch

from cliffdata import schema
from cliffdata.backends import Sampling
from cliffdata.generate.token_stats import ABSENT_RANK, compute_token_stats, tie_aware_rank


def test_tie_aware_rank_closed_cases():
    top = torch.tensor([[-0.5, -0.5 + 1e-12, -1.0, -2.0]], dtype=torch.float64)
    assert tie_aware_rank(torch.tensor([-0.5 + 1e-12], dtype=torch.float64), top).item() == 1   # tie with the top
    assert tie_aware_rank(torch.tensor([-0.5], dtype=torch.float64), top).item() == 1
    assert tie_aware_rank(torch.tensor([-1.0], dtype=torch.float64), top).item() == 3          # two above it
    assert tie_aware_rank(torch.tensor([-2.0], dtype=torch.float64), top).item() == 4
    assert tie_aware_rank(torch.tensor([-3.0], dtype=torch.float64), top).item() == ABSENT_RANK


def test_token_stats_match_direct_computation(tiny_model):
    prompt, response = [1, 24, 22, 8, 21], [40, 41, 66, 2]
    rows = compute_token_stats(tiny_model, [{"trace_id": "t", "prompt_ids": prompt, "response_ids": response}], 20,
                               Sampling(temperature=1.0))
    assert [r["token_index"] for r in rows] == [0, 1, 2, 3]
    with torch.inference_mode():
        logits = tiny_model(input_ids=torch.tensor([prompt + response])).logits[0].double()
    # The stage computes the head on the last T+1 positions only (logits_to_keep): float32 matmuls of
    # another shape round differently in the last bits, so compare at float32 precision, not 1e-9.
    for i, row in enumerate(rows):
        logp = logits[len(prompt) - 1 + i].log_softmax(-1)
        p = logp.exp()
        assert row["logprob"] == pytest.approx(logp[response[i]].item(), abs=1e-6)
        assert row["entropy_full"] == pytest.approx(-(p * logp).sum().item(), abs=1e-6)
        top_p, top_i = p.topk(20)
        assert row["top_ids"] == top_i.tolist()
        assert row["entropy"] == pytest.approx(-(top_p * top_p.log()).sum().item(), abs=1e-6)
        assert row["entropy"] <= row["entropy_full"] + 1e-12           # top-20, not renormalised
        assert row["greedy_token_id"] == int(logp.argmax())
        expected_rank = 1 + int((top_p.log() > logp[response[i]] + 1e-9).sum()) if response[i] in top_i else 21
        assert row["rank"] == expected_rank and row["is_greedy"] == (expected_rank == 1)
        assert sum(row["top_probs"]) == pytest.approx(top_p.sum().item(), rel=1e-5)
        # T = 1, no top-k/top-p: the sampler's probability is the raw one
        assert row["sampler_prob"] == pytest.approx(p[response[i]].item(), rel=1e-5)
        assert row["max_drop"] == pytest.approx(1 - row["sampler_prob"], abs=1e-15)
    schema.to_table("token_stats", rows)   # fits the schema


def test_greedy_token_has_rank_one(tiny_model):
    prompt = [1, 24, 22]
    with torch.inference_mode():
        greedy = int(tiny_model(input_ids=torch.tensor([prompt])).logits[0, -1].argmax())
    (row,) = compute_token_stats(tiny_model, [{"trace_id": "t", "prompt_ids": prompt, "response_ids": [greedy]}], 20,
                                 Sampling(temperature=0.0))
    assert row["rank"] == 1 and row["is_greedy"] and row["greedy_token_id"] == greedy
    assert row["entropy"] >= 0
    assert row["sampler_prob"] == 1.0 and row["max_drop"] == 0.0      # greedy rollouts always pick it
