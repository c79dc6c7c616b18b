"""Cliff-DPO: pairs from candidates, the single-token loss, a few real LoRA steps on the tiny model,
adapters in the backends, evaluation statistics, and the MLflow registry round trip."""
from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from cliffdata import schema
from cliffdata.backends import AdapterView, GenerationRequest, Sampling, make_backend
from cliffdata.config.dpo import DPOTrainConfig
from cliffdata.dpo.evaluate import accuracy_summary, eval_problems, paired_bootstrap
from cliffdata.dpo.pairs import VARIANTS, build_pairs, check_pairs, to_trl, variant_pairs
from cliffdata.dpo.train import (add_lora, completion_queries, dpo_loss, evaluate_pairs,
                                 next_token_logprobs, padding_id, sequence_logprobs, train_dpo)

# --- pairs -------------------------------------------------------------------------------------------

TRACES = [{"trace_id": "t#0", "problem_id": "p", "prompt_ids": [1, 24, 22], "response_ids": [30, 31, 32, 33, 2]},
          {"trace_id": "u#0", "problem_id": "q", "prompt_ids": [1, 40], "response_ids": [50, 51, 52, 2]}]
CLIFFS = [{"trace_id": "t#0", "problem_id": "p", "token_index": 2, "category": "uncertain", "is_correct": False},
          {"trace_id": "u#0", "problem_id": "q", "token_index": 1, "category": "sampled_off", "is_correct": False}]


def cand(trace_id, i, rank, cid, prob, potential, p_prev, cliff_token=False, cliff=False):
    return {"trace_id": trace_id, "token_index": i, "candidate_rank": rank, "candidate_id": cid, "prob": prob,
            "is_cliff_token": cliff_token, "is_cliff": cliff or cliff_token, "potential": potential, "p_prev": p_prev}


CANDIDATES = [
    # t#0 at 2: the cliff token 32 is rank 2; 40 keeps the potential, 41 is itself a cliff, 42 is below p_prev
    cand("t#0", 2, 1, 40, 0.5, 0.9, 0.8),
    cand("t#0", 2, 2, 32, 0.3, 0.1, 0.8, cliff_token=True),
    cand("t#0", 2, 3, 41, 0.1, 0.0, 0.8, cliff=True),
    cand("t#0", 2, 4, 42, 0.05, 0.7, 0.8),
    # u#0 at 1: the cliff token is outside the top-k (rank null): no pairs (paper)
    cand("u#0", 1, 1, 60, 0.9, 0.9, 0.9),
    cand("u#0", 1, None, 51, 0.001, 0.0, 0.9, cliff_token=True),
]


def test_cliff_1N_pairs_every_non_cliff_candidate_against_the_cliff_token():
    pairs = build_pairs(CANDIDATES, CLIFFS, TRACES, "cliff_1N", top_k=10)
    assert [(p["chosen_id"], p["rejected_id"]) for p in pairs] == [(40, 32), (42, 32)]
    assert all(p["prompt_ids"] == [1, 24, 22, 30, 31] for p in pairs)      # prompt + del prefix response[:2]
    assert pairs[0]["rejected_potential"] == 0.1 and pairs[0]["p_prev"] == 0.8


def test_cliff_hard_also_needs_the_candidate_to_keep_p_prev():
    pairs = build_pairs(CANDIDATES, CLIFFS, TRACES, "cliff_hard", top_k=10)
    assert [(p["chosen_id"], p["rejected_id"]) for p in pairs] == [(40, 32)]


def test_top_k_limits_candidates_and_skips_cliffs_whose_token_falls_outside():
    assert [p["chosen_id"] for p in build_pairs(CANDIDATES, CLIFFS, TRACES, "cliff_1N", top_k=3)] == [40]
    assert build_pairs(CANDIDATES, CLIFFS, TRACES, "cliff_1N", top_k=1) == []


def test_pairs_refuse_unknown_strategy_and_missing_candidates():
    with pytest.raises(ValueError, match="got 'dpo'"):
        build_pairs(CANDIDATES, CLIFFS, TRACES, "dpo", 10)
    with pytest.raises(ValueError, match="no rows in the candidates"):
        build_pairs(CANDIDATES[:4], CLIFFS, TRACES, "cliff_1N", 10)


def test_check_pairs_refuses_chosen_equal_rejected():
    row = {"trace_id": "t#0", "token_index": 2, "chosen_id": 5, "rejected_id": 5, "prompt_ids": [1]}
    with pytest.raises(ValueError, match="chosen_id == rejected_id == 5"):
        check_pairs([row], "dpo_pairs/all")


def synthetic_pairs(num_cliffs: int, per_cliff: int) -> list[dict]:
    cats = ["uncertain", "sampled_off", "deterministic"]
    return [{"trace_id": f"t{c}", "token_index": 3, "category": cats[c % 3], "chosen_id": 10 + j, "rejected_id": 9,
             "prompt_ids": [1, 2, 3]} for c in range(num_cliffs) for j in range(per_cliff)]


def test_variants_filter_by_category_and_the_heldout_split_is_exact_and_seeded():
    pairs = synthetic_pairs(30, 4)
    usp = variant_pairs(pairs, "uncertain_sampled_off", 0.1, seed=42)
    assert {p["category"] for p in usp} == {"uncertain", "sampled_off"} and len(usp) == 80
    assert sum(p["split"] == "heldout" for p in usp) == 8
    again = variant_pairs(pairs, "uncertain_sampled_off", 0.1, seed=42)
    other = variant_pairs(pairs, "uncertain_sampled_off", 0.1, seed=7)
    assert [p["split"] for p in again] == [p["split"] for p in usp]
    assert [p["split"] for p in other] != [p["split"] for p in usp]
    by_cliff = variant_pairs(pairs, "all", 0.1, seed=42, heldout_by="cliff")
    held = {p["trace_id"] for p in by_cliff if p["split"] == "heldout"}
    assert len(held) == 3 and all(p["split"] == "heldout" for p in by_cliff if p["trace_id"] in held)
    assert set(VARIANTS) == {"all", "deterministic", "uncertain", "sampled_off", "uncertain_sampled_off", "replicated",
                             "random"}


def test_replicated_and_random_variants():
    """replicated: the cliff pairs whose cliff replicated; random: only the control pairs (never in `all`)."""
    pairs = synthetic_pairs(6, 2) + [{"trace_id": "t0", "token_index": 7, "category": "control", "chosen_id": 4,
                                      "rejected_id": 3, "prompt_ids": [1]}]
    rep = variant_pairs(pairs, "replicated", 0.0, seed=42, replicated={("t1", 3), ("t4", 3)})
    assert sorted({p["trace_id"] for p in rep}) == ["t1", "t4"] and len(rep) == 4
    assert [p["token_index"] for p in variant_pairs(pairs, "random", 0.0, seed=42)] == [7]
    assert all(p["category"] != "control" for p in variant_pairs(pairs, "all", 0.0, seed=42))
    with pytest.raises(ValueError, match="replicate stage"):
        variant_pairs(pairs, "replicated", 0.0, seed=42)


def test_trl_export_has_one_token_per_side_and_fits_the_schema(tmp_path):
    rows = variant_pairs(build_pairs(CANDIDATES, CLIFFS, TRACES, "cliff_1N", 10), "all", 0.0, 42)
    trl = to_trl(rows)
    assert all(len(r["chosen_ids"]) == len(r["rejected_ids"]) == 1 for r in trl)
    table = schema.write("dpo_trl", trl, tmp_path / "all.trl.parquet")
    assert table.column_names[:3] == ["prompt_ids", "chosen_ids", "rejected_ids"]
    schema.write("dpo_pairs", rows, tmp_path / "all.parquet")


# --- the loss -------------------------------------------------------------------------------------------

def test_completion_is_one_token_per_side_without_eos_and_two_with_it():
    assert completion_queries([1, 2], 7, append_eos=False, eos_id=2) == [((1, 2), 7)]
    assert completion_queries([1, 2], 7, append_eos=True, eos_id=2) == [((1, 2), 7), ((1, 2, 7), 2)]
    with pytest.raises(ValueError, match="eos_token_id"):
        completion_queries([1], 7, True, None)


def test_padding_id_is_pad_else_eos_else_a_clear_error():
    from types import SimpleNamespace as Tok
    assert padding_id(Tok(pad_token_id=0, eos_token_id=2)) == 0          # 0 is a real id, not "unset"
    assert padding_id(Tok(pad_token_id=None, eos_token_id=2)) == 2
    with pytest.raises(ValueError, match="my-tok: neither pad_token_id nor eos_token_id"):
        padding_id(Tok(pad_token_id=None, eos_token_id=None, name_or_path="my-tok"))


def test_dpo_loss_matches_the_closed_form():
    pc, pr, rc, rr = (torch.tensor([-1.0, -2.0]), torch.tensor([-3.0, -1.0]),
                      torch.tensor([-1.5, -2.0]), torch.tensor([-2.0, -2.0]))
    loss, stats = dpo_loss(pc, pr, rc, rr, beta=0.5)
    margins = [0.5 * ((-1 + 1.5) - (-3 + 2)), 0.5 * ((-2 + 2) - (-1 + 2))]        # 0.75, -0.5
    expected = np.mean([math.log1p(math.exp(-m)) for m in margins])
    assert float(loss) == pytest.approx(expected, rel=1e-6)
    assert stats["reward_accuracy"] == 0.5 and stats["margin"] == pytest.approx(np.mean(margins))


def naive_logprob(model, prompt, tokens):
    """Sum of log π(tokens[j] | prompt + tokens[:j]) from one unpadded forward."""
    ids = torch.tensor([list(prompt) + list(tokens)])
    logp = model(input_ids=ids).logits[0].float().log_softmax(-1)
    return sum(float(logp[len(prompt) - 1 + j, t]) for j, t in enumerate(tokens))


@pytest.mark.parametrize("append_eos", [False, True])
def test_sequence_logprobs_with_shared_prefixes_match_unpadded_forwards(tiny_model, append_eos):
    rows = [{"prompt_ids": [1, 24, 22, 8], "chosen_id": 30, "rejected_id": 31},
            {"prompt_ids": [1, 24, 22, 8], "chosen_id": 40, "rejected_id": 31},
            {"prompt_ids": [1, 40], "chosen_id": 50, "rejected_id": 51}]
    with torch.no_grad():
        chosen, rejected = sequence_logprobs(tiny_model, rows, append_eos, eos_id=2, pad_id=2)
        for r, c, j in zip(rows, chosen, rejected):
            tail = [2] if append_eos else []
            assert float(c) == pytest.approx(naive_logprob(tiny_model, r["prompt_ids"], [r["chosen_id"], *tail]), abs=1e-4)
            assert float(j) == pytest.approx(naive_logprob(tiny_model, r["prompt_ids"], [r["rejected_id"], *tail]), abs=1e-4)


def train_rows() -> list[dict]:
    return [{"prompt_ids": [1, 24, 22, 8 + k], "chosen_id": 30 + k, "rejected_id": 40 + k} for k in range(8)]


def test_a_few_dpo_steps_lower_the_loss_change_lora_and_leave_the_base_unchanged():
    from tests.conftest import build_model, build_tokenizer

    base = build_model(len(build_tokenizer()), seed=0)
    before_base = {k: v.clone() for k, v in base.state_dict().items()}
    model = add_lora(base, r=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj", "o_proj"], seed=0)
    lora_before = {k: v.clone() for k, v in model.named_parameters() if "lora_" in k}
    hp = DPOTrainConfig(beta=0.5, learning_rate=5e-2, warmup_ratio=0.0, batch_size=4, epochs=6, seed=0)
    rows = train_rows()
    start = evaluate_pairs(model, rows, hp, eos_id=2, pad_id=2)
    assert start["loss"] == pytest.approx(math.log(2), abs=1e-6)           # the adapter starts as the identity
    history = train_dpo(model, rows, hp, eos_id=2, pad_id=2)
    end = evaluate_pairs(model, rows, hp, eos_id=2, pad_id=2)
    assert len(history) == 12 and all(math.isfinite(h["loss"]) for h in history)
    assert end["loss"] < start["loss"] - 0.05 and end["reward_accuracy"] == 1.0
    assert any(not torch.equal(v, lora_before[k]) for k, v in model.named_parameters() if "lora_" in k)
    merged_free = {k.replace("base_model.model.", "").replace(".base_layer", ""): v
                   for k, v in model.state_dict().items() if "lora_" not in k}
    for k, v in before_base.items():
        assert torch.equal(merged_free[k], v), k


def test_no_training_pairs_leaves_the_adapter_at_identity(tiny_model):
    from tests.conftest import build_model

    model = add_lora(build_model(tiny_model.config.vocab_size), 4, 8, 0.0, ["q_proj"], 0)
    assert train_dpo(model, [], DPOTrainConfig(), eos_id=2, pad_id=2) == []


# --- adapters in the backends -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained_adapter(tmp_path_factory, tiny_model_dir):
    """A LoRA adapter trained a few steps on the tiny model, saved as a PEFT folder."""
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model = add_lora(base, r=8, alpha=16, dropout=0.0, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], seed=0)
    train_dpo(model, train_rows(), DPOTrainConfig(beta=0.5, learning_rate=5e-2, warmup_ratio=0.0, batch_size=4, epochs=4),
              eos_id=2, pad_id=2)
    folder = tmp_path_factory.mktemp("adapter") / "uncertain"
    model.save_pretrained(folder)
    return folder


def merged_greedy(tiny_model_dir, adapter, prompt, steps):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), adapter).merge_and_unload()
    be = make_backend("hf", model=model.eval())
    return be.generate([GenerationRequest(prompt)], Sampling(temperature=0.0, max_new_tokens=steps))[0].token_ids[0]


def test_hf_backend_serves_base_and_adapters_by_request(tiny_model_dir, trained_adapter):
    be = make_backend("hf", str(tiny_model_dir), dtype="float32", adapters={"uncertain": str(trained_adapter)})
    plain = make_backend("hf", str(tiny_model_dir), dtype="float32")
    greedy = Sampling(temperature=0.0, max_new_tokens=8)
    prompt = (1, 24, 22, 8)
    mixed = be.generate([GenerationRequest(prompt), GenerationRequest(prompt, adapter="uncertain")], greedy)
    assert mixed[0] == plain.generate([GenerationRequest(prompt)], greedy)[0]
    assert mixed[1].token_ids[0] == merged_greedy(tiny_model_dir, trained_adapter, prompt, 8)
    assert AdapterView(be, "uncertain").generate([GenerationRequest(prompt)], greedy)[0] == mixed[1]
    with pytest.raises(ValueError, match="unknown adapter 'nope'"):
        be.generate([GenerationRequest(prompt, adapter="nope")], greedy)


def test_cliff_count_runs_every_model_in_one_scheduler_as_each_alone(tmp_path, tiny_model_dir, trained_adapter):
    """count_cliffs on the base and an adapter together gives the rows of each model counted alone: the
    scheduler keys traces by model (seeds, max_drop bounds, checkpoint) and hands back plain trace ids."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from cliffdata.backends.hf import load_adapters
    from cliffdata.checkpoint import UnitCheckpoint
    from cliffdata.config.problems import PromptConfig
    from cliffdata.config.search import RolloutsConfig
    from cliffdata.dpo.cliff_count import count_cliffs
    from project_cliffs import CLIFFS

    adapters = {"uncertain": str(trained_adapter)}
    be = make_backend("hf", str(tiny_model_dir), dtype="float32", adapters=adapters)
    model = load_adapters(AutoModelForCausalLM.from_pretrained(tiny_model_dir), adapters).eval()
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    problems = [{"problem_id": f"p{i}", "prompt": "p", "question": f"{i}+{i}", "answer": str(2 * i),
                 "answer_format": "hash"} for i in range(3)]
    rollouts = RolloutsConfig(mode="forks", num_rollouts=4, positions_per_batch=4, traces_per_wave=2,
                              sampling=Sampling(temperature=1.0, max_new_tokens=4))
    args = (model, tok, problems, {"p": PromptConfig()}, Sampling(temperature=1.0, max_new_tokens=6), 0, rollouts,
            rollouts.sampling, CLIFFS, 5)
    together = count_cliffs({"base": None, "uncertain": "uncertain"}, be, *args, UnitCheckpoint(tmp_path / "both"))
    alone = (count_cliffs({"base": None}, be, *args, UnitCheckpoint(tmp_path / "base"))
             + count_cliffs({"uncertain": "uncertain"}, be, *args, UnitCheckpoint(tmp_path / "u")))
    assert together == alone
    # an adapter with the same weights as an earlier model's is that model: measured once, rows copied
    twice = make_backend("hf", str(tiny_model_dir), dtype="float32", adapters={**adapters, "copy": str(trained_adapter)})
    asked = []
    generate = twice.generate
    twice.generate = lambda requests, sampling: asked.extend(r.adapter for r in requests) or generate(requests, sampling)
    shared = count_cliffs({"base": None, "uncertain": "uncertain", "copy": "copy"}, twice, *args,
                          UnitCheckpoint(tmp_path / "copy"), digests={"uncertain": "d", "copy": "d"})
    assert "copy" not in asked and "uncertain" in asked
    assert shared == together + [dict(r, model="copy") for r in together if r["model"] == "uncertain"]
    assert [(r["model"], r["trace_id"]) for r in together] == [(m, f"p{i}#0") for m in ("base", "uncertain") for i in range(3)]
    assert sum(r["num_generated_tokens"] for r in together) > 0


def test_evaluate_models_samples_the_models_a_backend_can_mix_in_one_call(tiny_model_dir, trained_adapter):
    """dpo_eval: models with equal `batch_key` share calls (vLLM's rule here: adapters together, base apart),
    and the rows equal one call per model, model by model."""
    from transformers import AutoTokenizer

    from cliffdata.backends import Backend
    from cliffdata.config.problems import PromptConfig
    from cliffdata.dpo.evaluate import evaluate_models

    be = make_backend("hf", str(tiny_model_dir), dtype="float32",
                      adapters={"uncertain": str(trained_adapter), "other": str(trained_adapter)})

    class Lumping(Backend):
        def __init__(self):
            self.calls, self.eos_token_ids = [], be.eos_token_ids

        def generate(self, requests, sampling):
            self.calls.append({r.adapter for r in requests})
            return be.generate(requests, sampling)

        def batch_key(self, adapter):
            return adapter is not None

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    problems = [{"problem_id": f"p{i}", "prompt": "p", "question": f"{i}+1", "answer": str(i + 1),
                 "answer_format": "hash"} for i in range(3)]
    models = ["base", "uncertain", "other"]
    lumping = Lumping()
    mixed = evaluate_models(lumping, tok, problems, {"p": PromptConfig()}, models, 6)
    assert lumping.calls == [{None}, {"uncertain", "other"}]
    assert mixed == evaluate_models(be, tok, problems, {"p": PromptConfig()}, models, 6)
    assert [r["model"] for r in mixed] == [m for m in models for _ in problems]
    # equal weight digests: the second adapter is not decoded again, and its rows are the first's
    once = Lumping()
    deduped = evaluate_models(once, tok, problems, {"p": PromptConfig()}, models, 6,
                              adapter_digests={"uncertain": "d1", "other": "d1"})
    assert once.calls == [{None}, {"uncertain"}] and deduped == mixed
    distinct = Lumping()
    evaluate_models(distinct, tok, problems, {"p": PromptConfig()}, models, 6, adapter_digests={"uncertain": "d1", "other": "d2"})
    assert distinct.calls == [{None}, {"uncertain", "other"}]


# --- evaluation statistics ----------------------------------------------------------------------------

def test_paired_bootstrap_difference_and_interval():
    base = np.array([1, 0, 0, 1, 0, 1, 0, 0, 1, 0] * 5)
    same = paired_bootstrap(base, base, 500, seed=0)
    assert same == (0.0, 0.0, 0.0)
    better = base.copy()
    better[[1, 2, 4, 6]] = 1
    diff, lo, hi = paired_bootstrap(base, better, 2000, seed=0)
    assert diff == pytest.approx(4 / 50)
    assert 0 <= lo <= diff <= hi                 # improvements only: no resample can go below 0
    with pytest.raises(ValueError, match="equal, non-empty"):
        paired_bootstrap(base, better[:-1], 100, 0)


def test_accuracy_summary_counts_ungradable_as_not_correct():
    rows = [{"model": m, "problem_id": f"p{i}", "is_correct": c} for m, cs in
            (("base", [True, False, None, False]), ("uncertain", [True, True, None, True])) for i, c in enumerate(cs)]
    out = accuracy_summary(rows, "base", num_resamples=200, seed=0)
    assert out["base"]["accuracy"] == 0.25 and out["base"]["num_ungradable"] == 1
    assert out["uncertain"]["diff_to_base"] == pytest.approx(0.5)
    assert "diff_to_control" not in out["uncertain"]


def test_accuracy_summary_against_the_control():
    """Each adapter's difference to the random-position control, with the same paired bootstrap."""
    marks = {"base": [0, 0, 1, 0, 0, 1], "random": [0, 1, 1, 0, 0, 0], "all": [1, 1, 1, 0, 1, 1]}
    rows = [{"model": m, "problem_id": f"p{i}", "is_correct": bool(c)} for m, cs in marks.items() for i, c in enumerate(cs)]
    out = accuracy_summary(rows, "base", num_resamples=500, seed=3, control="random")
    assert out["all"]["diff_to_control"] == pytest.approx(5 / 6 - 2 / 6)
    diff, lo, hi = paired_bootstrap(np.array(marks["random"], float), np.array(marks["all"], float), 500, 3)
    assert (out["all"]["control_ci_low"], out["all"]["control_ci_high"]) == (lo, hi)
    assert "diff_to_control" not in out["random"] and "diff_to_control" not in out["base"]


def test_eval_problems_drop_training_questions():
    from cliffdata.config.problems import SourceConfig

    src = SourceConfig(dataset="arith", seed=0, families={"add1": 20}, prompt="p")
    train = [{"question": q["question"]} for q in eval_problems([src], [])[0][:5]]
    kept, dropped = eval_problems([src], train)
    assert dropped == 5 and len(kept) == 15
    with pytest.raises(ValueError, match="also appear in training"):
        eval_problems([src], eval_problems([src], [])[0])


# --- MLflow: pyfunc, registry, promotion ----------------------------------------------------------------

@pytest.mark.slow
def test_registered_pyfunc_equals_the_in_memory_adapter_and_promote_sets_champion(
        tmp_path, monkeypatch, tiny_model_dir, trained_adapter):
    import mlflow
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from cliffdata import tracking
    from cliffdata.dpo import registry

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    name = "cliff-dpo-tiny"
    # a project as the pipeline leaves it: run records, training and eval metrics, adapters (DVC-tracked)
    root = tmp_path / "proj"
    shutil.copytree(tiny_model_dir, root / "models/base")
    (root / "params.yaml").write_text("dpo_train: {}\ndpo_pairs: {}\nmodel: {source: tiny}\n")
    versions = {}
    for variant, acc in (("uncertain", 0.4), ("all", 0.7), ("sampled_off", 0.5)):
        shutil.copytree(trained_adapter, root / f"models/adapters/{variant}")
        with tracking.start_run("cliff-dpo", f"dpo_train-{variant}", params={"variant": variant}) as run:
            info = registry.log_adapter(trained_adapter, tiny_model_dir, name, pad_id=2, top_k=20)
            registry.tag_version(name, info.registered_model_version, {"variant": variant})
        versions[variant] = info.registered_model_version
        for path, record in ((f"runs/dpo_train/{variant}.json", {"run_id": run.info.run_id, "version": versions[variant]}),
                             (f"metrics/dpo_train/{variant}.json", {"num_train_pairs": 3, "train_loss_last": 0.5})):
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            (root / path).write_text(json.dumps(record))
    (root / "metrics/dpo_eval.json").write_text(json.dumps({"models": {
        "base": {"accuracy": 0.9}, "all": {"accuracy": 0.7, "diff_to_base": -0.2},
        "uncertain": {"accuracy": 0.4, "diff_to_base": -0.5}, "sampled_off": {"accuracy": 0.5, "diff_to_base": -0.4}}}))
    order = ["uncertain", "all", "sampled_off"]                      # dpo_train.variants: the order they trained in
    best = registry.promote(root, name, "eval_accuracy", "eval_accuracy", top_k=20, variants=order)
    assert best["variant"] == "all" and str(best["version"]) == str(versions["all"]) and best["value"] == 0.7
    assert registry.champion(root) == "all"                        # runs/champion.json: readable without a store
    lowest = registry.promote(root, name, "eval_accuracy_diff", "eval_accuracy", top_k=20, variants=order,
                              greater_is_better=False)
    assert lowest["variant"] == "uncertain" and str(lowest["version"]) == str(versions["uncertain"])
    with pytest.raises(ValueError, match="no adapter .* has 'nope'"):
        registry.promote(root, name, "nope", "eval_accuracy", top_k=20, variants=order)

    # a colleague's clone: an empty store. Promotion restores every variant's run from the DVC-tracked files
    # in the order they trained (versions 1, 2, 3 as the author's were), registers their adapters again and
    # points the alias at the winner's; a second call restores nothing twice.
    empty = f"sqlite:///{tmp_path / 'colleague.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", empty)
    mlflow.set_tracking_uri(empty)
    again = registry.promote(root, name, "eval_accuracy", "eval_accuracy", top_k=20, variants=order)
    assert again["variant"] == "all" and again["run_id"] != best["run_id"] and str(again["version"]) == "2"
    client = mlflow.MlflowClient()
    assert client.get_run(again["run_id"]).data.tags["cliffdata.restored_from"] == best["run_id"]
    assert registry.promote(root, name, "eval_accuracy", "eval_accuracy", top_k=20, variants=order)["run_id"] \
        == again["run_id"]
    assert {int(v.version): v.tags["variant"] for v in client.search_model_versions(f"name = '{name}'")} == \
        {1: "uncertain", 2: "all", 3: "sampled_off"}
    uri = empty

    prompts = [[1, 24, 22, 8], [1, 40]]
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), trained_adapter).eval()
    with torch.no_grad():
        expected = next_token_logprobs(model, prompts, pad_id=2)
    script = (
        "import json, sys, mlflow, pandas as pd\n"
        f"m = mlflow.pyfunc.load_model('models:/{name}@champion')\n"
        f"out = m.predict(pd.DataFrame({{'prompt_ids': {prompts!r}, 'token_ids': [[30, 31], [50]]}}))\n"
        "print(json.dumps({'top_ids': out['top_ids'].tolist(), 'top_logprobs': out['top_logprobs'].tolist(),"
        " 'token_logprobs': out['token_logprobs'].tolist()}))\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "MLFLOW_TRACKING_URI": uri})
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    top_lp, top_ids = expected.topk(20, dim=-1)
    assert got["top_ids"] == top_ids.tolist()
    np.testing.assert_allclose(got["top_logprobs"], top_lp.tolist(), atol=1e-5)
    np.testing.assert_allclose(got["token_logprobs"][0], expected[0, [30, 31]].tolist(), atol=1e-5)
    np.testing.assert_allclose(got["token_logprobs"][1], expected[1, [50]].tolist(), atol=1e-5)


# --- SQL checks on the pairs --------------------------------------------------------------------------

import copy  # noqa: E402

from cliffdata.analysis import duck  # noqa: E402

PAIR_BREAKS = {
    "unique_dpo_pairs": lambda rows: rows.append(copy.deepcopy(rows[0])),
    "dpo_pairs_valid": lambda rows: rows[1].update(rejected_id=rows[1]["chosen_id"]),
}


def pairs_seed() -> list[dict]:
    return variant_pairs(build_pairs(CANDIDATES, CLIFFS, TRACES, "cliff_1N", 10), "all", 0.5, 42)


def test_every_pairs_check_has_a_breaking_seed():
    checks = {n for n, sql in duck.check_files().items() if "dpo_pairs" in duck._referenced_datasets(sql)}
    assert checks == set(PAIR_BREAKS)


@pytest.mark.parametrize("check", [None, *sorted(PAIR_BREAKS)])
def test_pairs_checks(tmp_path, check):
    rows = pairs_seed()
    if check is not None:
        PAIR_BREAKS[check](rows)
    schema.write("dpo_pairs", rows, tmp_path / schema.PATHS["dpo_pairs"])
    con = duck.connect(tmp_path, ["dpo_pairs"])
    if check is None:
        finite = {"finite_dpo_pairs": 0} if duck._float_columns("dpo_pairs") else {}
        assert duck.assert_checks(con) == dict.fromkeys(PAIR_BREAKS, 0) | finite
    else:
        with pytest.raises(ValueError, match=check):
            duck.assert_checks(con)


@pytest.mark.slow
def test_vllm_serves_adapters_by_lora_request(tiny_model_dir, trained_adapter):
    """One vLLM engine (CPU here) serves the base and an adapter; greedy tokens equal HF's merged model."""
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        pytest.skip("vllm cannot be imported here")
    be = make_backend("vllm", str(tiny_model_dir), dtype="float32", seed=0, enforce_eager=True, max_model_len=256,
                      adapters={"uncertain": str(trained_adapter)})
    try:
        greedy = Sampling(temperature=0.0, max_new_tokens=8)
        prompt = (1, 24, 22, 8)
        base, tuned = be.generate([GenerationRequest(prompt), GenerationRequest(prompt, adapter="uncertain")], greedy)
        plain = make_backend("hf", str(tiny_model_dir), dtype="float32")
        assert base == plain.generate([GenerationRequest(prompt)], greedy)[0]
        assert tuned.token_ids[0] == merged_greedy(tiny_model_dir, trained_adapter, prompt, 8)
        assert tuned != base                    # the adapter changes the greedy continuation
        # alone, after the adapter ran on the same prompt (prefix cache), the base is still the base
        assert be.generate([GenerationRequest(prompt)], greedy)[0] == base
        with pytest.raises(ValueError, match="unknown adapters"):
            be.generate([GenerationRequest(prompt, adapter="nope")], greedy)
    finally:
        be.close()


# --- the stages in process: dpo_train (with and without pairs) -> dpo_eval -> promote ---------------------

STAGE_PARAMS = """
problems: {sources: [{dataset: arith, seed: 0, families: {add1: 3}, prompt: p, answer_format: hash}]}
prompts: {p: {instruction: "", shots: []}}
cliffs: {test: {delta0: 0.1, z: 1.645, min_rollouts: 8}}
model: {source: embedded}
engine: {backend: hf, dtype: float32, hf_max_batch: 16}
dpo_train: {variants: [all, deterministic], beta: 0.5, learning_rate: 0.05, warmup_ratio: 0.0, batch_size: 4,
            epochs: 3, lora_r: 4, lora_alpha: 8, lora_dropout: 0.0, target_modules: [q_proj, v_proj], seed: 0}
dpo_eval:
  sources: [{dataset: arith, seed: 1, families: {add1: 6}, prompt: p, answer_format: hash}]
  max_new_tokens: 4
  bootstrap_resamples: 200
"""


def load_stage(name: str):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "pipeline" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"stage_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_train_eval_promote_stages(tmp_path, monkeypatch, tiny_model_dir):
    import mlflow

    from cliffdata.cli import main as cli_main
    from cliffdata.config.load import load_params
    from cliffdata.dpo import registry
    from cliffdata.problems import load_problems

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(STAGE_PARAMS)
    (tmp_path / "models").mkdir()
    (tmp_path / "models/base").symlink_to(tiny_model_dir)
    rows = [dict(p, trace_id=f"t{k}", problem_id="arith/add1-00000", token_index=1, category="uncertain",
                 strategy="cliff_1N", is_correct=False, chosen_rank=1, rejected_rank=2, chosen_prob=0.5,
                 rejected_prob=0.2, chosen_potential=0.8, rejected_potential=0.1, p_prev=0.8,
                 split="heldout" if k == 0 else "train", variant="all") for k, p in enumerate(train_rows())]
    schema.write("dpo_pairs", rows, tmp_path / "data/dpo_pairs/all.parquet")
    schema.write("dpo_pairs", [], tmp_path / "data/dpo_pairs/deterministic.parquet")
    problems, _ = load_problems(load_params().problems)
    schema.write("problems", problems, tmp_path / schema.PATHS["problems"])

    load_stage("dpo_train").main()
    trained = json.loads((tmp_path / "metrics/dpo_train/all.json").read_text())
    assert trained["num_train_pairs"] == 7 and trained["num_heldout_pairs"] == 1 and trained["num_steps"] == 6
    assert trained["train_loss_last"] < trained["train_loss_first"]
    assert json.loads((tmp_path / "metrics/dpo_train/deterministic.json").read_text())["num_steps"] == 0
    assert (tmp_path / "models/adapters/all/adapter_config.json").exists()
    record = json.loads((tmp_path / "runs/dpo_train/all.json").read_text())
    client = mlflow.MlflowClient()
    run = client.get_run(record["run_id"])
    assert run.data.params["dpo_train.beta"] == "0.5" and run.data.tags["variant"] == "all"
    assert len(run.data.tags["pairs_md5"]) == 32
    assert len(client.get_metric_history(record["run_id"], "train/loss")) == 6
    assert record["registered_model"] == "cliff-dpo-smollm2-135m-instruct"
    # the model version has a signature; the variant without pairs is tracked but not registered
    from mlflow.models import get_model_info
    info = get_model_info(record["model_uri"])
    assert [c["name"] for c in info.signature.inputs.to_dict()] == ["prompt_ids", "token_ids"]
    assert [c["name"] for c in info.signature.outputs.to_dict()] == ["top_ids", "top_logprobs", "token_logprobs"]
    empty = json.loads((tmp_path / "runs/dpo_train/deterministic.json").read_text())
    assert empty["version"] is None and empty["model_uri"] is None and client.get_run(empty["run_id"])
    versions = client.search_model_versions("name = 'cliff-dpo-smollm2-135m-instruct'")
    assert [v.tags.get("variant") for v in versions] == ["all"]

    load_stage("dpo_eval").main()
    evaluated = json.loads((tmp_path / "metrics/dpo_eval.json").read_text())
    assert set(evaluated["models"]) == {"base", "all"} and evaluated["skipped_no_training_pairs"] == ["deterministic"]
    assert evaluated["models"]["base"]["num_problems"] == 6
    assert "eval_accuracy" in client.get_run(record["run_id"]).data.metrics

    assert cli_main(["promote", "--metric", "eval_accuracy"]) == 0
    champion = client.get_model_version_by_alias("cliff-dpo-smollm2-135m-instruct", "champion")
    assert champion.tags["variant"] == "all"

    # a colleague's store restores each run whole from what git and DVC track: the author's tags (git
    # commit, pairs_md5), train_seconds, the per-step curve, and the variant trained on no pair too
    assert record["tracking_uri"] == "sqlite:///mlflow.db"                # no author's path in a committed file
    assert record["tags"]["git_commit"] == run.data.tags["git_commit"] and record["metrics"]["train_seconds"] > 0
    colleague = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'colleague.db'}")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'colleague.db'}")
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'colleague.db'}")
    restored = registry.training_runs(["all", "deterministic"], tmp_path, "cliff-dpo-smollm2-135m-instruct", 20,
                                      colleague)
    assert list(restored) == ["all", "deterministic"]
    again = colleague.get_run(restored["all"])
    assert {k: again.data.tags[k] for k in record["tags"]} == record["tags"]
    assert again.data.tags["cliffdata.restored_from"] == record["run_id"]
    assert again.data.metrics["train_seconds"] == record["metrics"]["train_seconds"]
    assert [m.value for m in colleague.get_metric_history(restored["all"], "train/loss")] == pytest.approx(
        [m.value for m in client.get_metric_history(record["run_id"], "train/loss")], abs=1e-6)
    assert colleague.get_run(restored["deterministic"]).data.tags["cliffdata.restored_from"] == empty["run_id"]


@pytest.mark.slow
def test_dpo_train_workers_and_shared_pairs(tmp_path, monkeypatch, tiny_model_dir):
    """Two worker processes train the variants; variants with the same pairs are trained once. Every
    adapter equals, byte for byte, what one in-process training of its pairs gives."""
    import mlflow

    from cliffdata.config.load import load_params
    from cliffdata.dpo.train import train_adapter

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(STAGE_PARAMS.replace(
        "variants: [all, deterministic]", "variants: [all, uncertain, sampled_off], workers: 2"))
    (tmp_path / "models").mkdir()
    (tmp_path / "models/base").symlink_to(tiny_model_dir)
    base = [dict(p, trace_id=f"t{k}", problem_id="arith/add1-00000", token_index=1, category="uncertain",
                 strategy="cliff_1N", is_correct=False, chosen_rank=1, rejected_rank=2, chosen_prob=0.5,
                 rejected_prob=0.2, chosen_potential=0.8, rejected_potential=0.1, p_prev=0.8,
                 split="heldout" if k == 0 else "train") for k, p in enumerate(train_rows())]
    variants = {"all": base, "uncertain": base, "sampled_off": base[:4]}
    for variant, rows in variants.items():
        schema.write("dpo_pairs", [dict(r, variant=variant) for r in rows], tmp_path / f"data/dpo_pairs/{variant}.parquet")

    load_stage("dpo_train").main()
    weights = {v: (tmp_path / f"models/adapters/{v}/adapter_model.safetensors").read_bytes() for v in variants}
    assert weights["all"] == weights["uncertain"] != weights["sampled_off"]
    hp = load_params().dpo_train
    for variant in ("all", "sampled_off"):
        rows = variants[variant]
        train_adapter("models/base", [r for r in rows if r["split"] == "train"],
                      [r for r in rows if r["split"] == "heldout"], hp, tmp_path / f"alone-{variant}")
        assert (tmp_path / f"alone-{variant}/adapter_model.safetensors").read_bytes() == weights[variant]
    assert not list((tmp_path / "models/adapters").glob("*.tmp"))
    metrics = {v: json.loads((tmp_path / f"metrics/dpo_train/{v}.json").read_text()) for v in variants}
    assert metrics["all"] == dict(metrics["uncertain"], variant="all") and metrics["sampled_off"]["num_train_pairs"] == 3
    client = mlflow.MlflowClient()
    shared = client.get_run(json.loads((tmp_path / "runs/dpo_train/uncertain.json").read_text())["run_id"])
    assert shared.data.tags["same_pairs_as"] == "all" and shared.data.tags["stage"] == "dpo_train"
    versions = client.search_model_versions("name = 'cliff-dpo-smollm2-135m-instruct'")
    assert sorted((int(v.version), v.tags["variant"]) for v in versions) == [(1, "all"), (2, "uncertain"), (3, "sampled_off")]


def test_saved_adapter_config_does_not_depend_on_the_hash_seed(tmp_path, tiny_tokenizer):
    """PEFT keeps target_modules as a set and writes it in set order, which follows the process's string
    hash seed: save_adapter writes the same bytes whatever that order is (here: every order of the four)."""
    import itertools

    from cliffdata.dpo.train import add_lora, save_adapter
    from conftest import build_model

    model = add_lora(build_model(len(tiny_tokenizer), num_hidden_layers=1), 4, 8, 0.0,
                     ["q_proj", "k_proj", "v_proj", "o_proj"], 0)

    class Ordered(set):                                  # a set that iterates in a given order, as a hash seed may
        def __init__(self, order):
            super().__init__(order)
            self.order = list(order)

        def __iter__(self):
            return iter(self.order)

    configs = set()
    for n, order in enumerate(itertools.permutations(["q_proj", "k_proj", "v_proj", "o_proj"])):
        model.peft_config["default"].target_modules = Ordered(order)
        save_adapter(model, tmp_path / str(n))
        configs.add((tmp_path / str(n) / "adapter_config.json").read_bytes())
    assert len(configs) == 1 and json.loads(configs.pop())["target_modules"] == ["k_proj", "o_proj", "q_proj", "v_proj"]


def test_train_all_trains_each_distinct_variant_once_and_copies_the_rest(tmp_path, monkeypatch, tiny_model_dir):
    """`dpo_train`'s library path in process (one worker): variants are read from data/dpo_pairs, a variant
    whose pairs equal an earlier one's is a copy of that adapter, a distinct one trains its own, and the
    same pairs give the same adapter bytes again."""
    from cliffdata.dpo.train import pair_content, read_pairs, train_all
    from helpers import pair_row

    monkeypatch.chdir(tmp_path)
    shutil.copytree(tiny_model_dir, tmp_path / "models/base")

    def rows(variant: str, shift: int) -> list[dict]:
        return [pair_row(variant, k, [1, 24, 22, 8 + k + shift], 30 + k, 40 + k, "train" if k < 4 else "heldout")
                for k in range(6)]

    for variant, shift in (("all", 0), ("uncertain", 0), ("random", 1)):
        schema.write("dpo_pairs", rows(variant, shift), tmp_path / f"data/dpo_pairs/{variant}.parquet")
    pairs, source = read_pairs(["all", "uncertain", "random"])
    assert source == {"all": "all", "uncertain": "all", "random": "random"}
    assert pair_content(pairs["uncertain"][0]) == pair_content(pairs["all"][0]) and len(pairs["all"][1]) == 2

    hp = DPOTrainConfig(beta=0.5, learning_rate=5e-2, warmup_ratio=0.0, batch_size=4, epochs=1, seed=0)
    into = tmp_path / "models/adapters"
    results = train_all(pairs, source, hp, workers=1, into=into)
    assert set(results) == {"all", "random"} and all(r["history"] for r in results.values())
    weights = {v: (into / f"{v}.tmp/adapter_model.safetensors").read_bytes() for v in ("all", "uncertain", "random")}
    assert weights["uncertain"] == weights["all"] != weights["random"]
    again = train_all({"all": pairs["all"]}, {"all": "all"}, hp, workers=1, into=tmp_path / "again")
    assert (tmp_path / "again/all.tmp/adapter_model.safetensors").read_bytes() == weights["all"]
    assert again["all"]["after"] == results["all"]["after"]
