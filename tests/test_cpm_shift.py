"""CPM shift (protocol §5 RQ3): tokenizer refusal, cliff sets, and CPM recomputed by an eval model."""
from __future__ import annotations

import pytest
import torch

from cliffdata.dpo.train import next_token_logprobs
from cliffdata.experiments.cpm_shift import check_same_tokenizer, cliff_sets, cpm_shift_rows
from tests.conftest import build_tokenizer


def test_same_tokenizer_passes(tiny_tokenizer):
    check_same_tokenizer(tiny_tokenizer, build_tokenizer())


def test_vocab_size_mismatch_is_refused(tiny_tokenizer):
    other = build_tokenizer()
    other.add_tokens(["<extra>"])
    with pytest.raises(ValueError, match=r"tokenizer mismatch \(vocab size\)"):
        check_same_tokenizer(tiny_tokenizer, other)


def test_special_id_mismatch_is_refused(tiny_tokenizer):
    other = build_tokenizer()
    other.eos_token = "<|endoftext|>"
    with pytest.raises(ValueError, match=r"tokenizer mismatch \(special ids\): eos_token_id"):
        check_same_tokenizer(tiny_tokenizer, other)


def test_sample_sentence_mismatch_is_refused(tiny_tokenizer):
    """Same size and specials, but two ordinary tokens swap ids: only the sample sentence shows it."""
    import string

    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from tests.conftest import SPECIALS

    chars = list(string.ascii_letters + string.digits + " .,?!+-*/=#$\n:()")
    i, j = chars.index("1"), chars.index("2")
    chars[i], chars[j] = chars[j], chars[i]
    vocab = {tok: k for k, tok in enumerate(SPECIALS + ["####"] + chars)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<|endoftext|>"))
    tok.pre_tokenizer = pre_tokenizers.Split(pattern=Regex("####|."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens(SPECIALS)
    other = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                    unk_token="<|endoftext|>", pad_token="<|im_end|>")
    with pytest.raises(ValueError, match=r"tokenizer mismatch \(sample sentence ids\)"):
        check_same_tokenizer(tiny_tokenizer, other)


def test_cliff_sets_hold_the_cliff_candidates_and_the_cliff_token():
    rows = [{"trace_id": "t", "token_index": 3, "candidate_id": 7, "prob": 0.5, "is_cliff": True, "is_cliff_token": True},
            {"trace_id": "t", "token_index": 3, "candidate_id": 8, "prob": 0.2, "is_cliff": True, "is_cliff_token": False},
            {"trace_id": "t", "token_index": 3, "candidate_id": 9, "prob": 0.3, "is_cliff": False, "is_cliff_token": False}]
    sets = cliff_sets(rows)
    assert sets[("t", 3)] == {"members": {7: 0.5, 8: 0.2}, "cliff_token": 7}
    with pytest.raises(ValueError, match="no row for the cliff token"):
        cliff_sets(rows[1:])


def test_cpm_by_the_source_model_itself_equals_the_source_cpm(tiny_model):
    """Hand-made example: the candidates' probabilities are the tiny model's own, so reading the same
    prefix with the same model gives ΔCPM = 0 and the same rank; with top_k = 1 only the argmax counts."""
    prompt, response, i = [1, 24, 22, 8], [30, 31, 32, 33], 2
    prefix = prompt + response[:i]
    with torch.no_grad():
        probs = next_token_logprobs(tiny_model, [prefix], pad_id=2)[0].exp()
    order = probs.argsort(descending=True).tolist()
    cliff_token, other_cliff, not_cliff = order[0], order[3], order[1]
    candidates = [
        {"trace_id": "t", "token_index": i, "candidate_id": cliff_token, "prob": float(probs[cliff_token]),
         "is_cliff": True, "is_cliff_token": True},
        {"trace_id": "t", "token_index": i, "candidate_id": other_cliff, "prob": float(probs[other_cliff]),
         "is_cliff": True, "is_cliff_token": False},
        {"trace_id": "t", "token_index": i, "candidate_id": not_cliff, "prob": float(probs[not_cliff]),
         "is_cliff": False, "is_cliff_token": False}]
    traces = [{"trace_id": "t", "prompt_ids": prompt, "response_ids": response}]
    cliffs = [{"trace_id": "t", "token_index": i, "category": "uncertain"}]
    stats = {("t", i): {"rank": 1}}
    [row] = cpm_shift_rows("base", "base", tiny_model, 2, traces, cliffs, candidates, stats, top_k=20)
    expected = float(probs[cliff_token] + probs[other_cliff])
    assert row["cpm_source"] == pytest.approx(expected, abs=1e-6)
    assert row["cpm_eval"] == pytest.approx(expected, abs=1e-6) and row["delta_cpm"] == pytest.approx(0, abs=1e-6)
    assert row["rank_eval"] == 1 and row["is_greedy_eval"] and row["num_cliff_set"] == 2
    [top1] = cpm_shift_rows("base", "base", tiny_model, 2, traces, cliffs, candidates, stats, top_k=1)
    assert top1["cpm_eval"] == pytest.approx(float(probs[cliff_token]), abs=1e-6)    # other_cliff is outside the top-1


# --- SQL: the cpm_shift table and its checks, on a seed ------------------------------------------------

import copy  # noqa: E402

from cliffdata import schema  # noqa: E402
from cliffdata.analysis import duck  # noqa: E402


def shift_row(category, cpm_source, cpm_eval, rank_source=1, rank_eval=1, trace="t", i=0, eval_model="adapter:u"):
    return {"source_model": "base", "eval_model": eval_model, "trace_id": trace, "token_index": i, "category": category,
            "num_cliff_set": 2, "cpm_source": cpm_source, "cpm_eval": cpm_eval, "delta_cpm": cpm_eval - cpm_source,
            "rank_source": rank_source, "rank_eval": rank_eval, "entropy_eval": 0.5, "is_greedy_eval": rank_eval == 1}


SEED = [shift_row("uncertain", 0.6, 0.2, 1, 3, "t", 1), shift_row("uncertain", 0.8, 0.8, 1, 1, "t", 4),
        shift_row("sampled_off", 0.3, 0.1, 4, 9, "u", 2), shift_row("deterministic", 1.0, 0.99, 1, 1, "v", 0)]
SHIFT_BREAKS = {
    "unique_cpm_shift": lambda rows: rows.append(copy.deepcopy(rows[0])),
    "cpm_shift_range": lambda rows: rows[1].update(cpm_eval=1.2, delta_cpm=0.4),
}


def write_shift(tmp_path, rows):
    schema.write("cpm_shift", rows, tmp_path / schema.PATHS["cpm_shift"])
    return duck.connect(tmp_path, ["cpm_shift"])


def test_cpm_shift_table_by_category_and_direction(tmp_path):
    table = {(r["direction"], r["category"]): r for r in duck.run_sql_file(write_shift(tmp_path, SEED), "cpm_shift", {}).to_pylist()}
    u = table[("base -> adapter:u", "uncertain")]
    assert u["num_cliffs"] == 2 and u["cpm_source_mean"] == pytest.approx(0.7) and u["cpm_eval_mean"] == pytest.approx(0.5)
    assert u["delta_cpm_mean"] == pytest.approx(-0.2) and u["share_cpm_down"] == 0.5
    assert u["rank_shift_mean"] == pytest.approx(1.0) and u["greedy_eval_share"] == 0.5
    assert table[("base -> adapter:u", "all")]["num_cliffs"] == 4
    assert table[("base -> adapter:u", "sampled_off")]["rank_shift_mean"] == 5


def test_cpm_shift_table_on_zero_rows(tmp_path):
    assert duck.run_sql_file(write_shift(tmp_path, []), "cpm_shift", {}).num_rows == 0


def test_every_cpm_shift_check_has_a_breaking_seed():
    checks = {n for n, sql in duck.check_files().items() if "cpm_shift" in duck._referenced_datasets(sql)}
    assert checks == set(SHIFT_BREAKS)


def test_cpm_shift_checks_pass_on_the_seed(tmp_path):
    counts = duck.assert_checks(write_shift(tmp_path, SEED))
    assert counts == dict.fromkeys(SHIFT_BREAKS, 0) | {"finite_cpm_shift": 0}


@pytest.mark.parametrize("check", sorted(SHIFT_BREAKS))
def test_cpm_shift_check_catches_a_broken_seed(tmp_path, check):
    rows = copy.deepcopy(SEED)
    SHIFT_BREAKS[check](rows)
    with pytest.raises(ValueError, match=check):
        duck.assert_checks(write_shift(tmp_path, rows))
