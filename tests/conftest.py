"""Hermetic fixtures: a tiny Llama and a character-level ChatML tokenizer built in-process."""
from __future__ import annotations

import os
import string

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tokenizer(extra_chars: str = ""):
    """Character-level tokenizer (digits are single tokens, as in SmolLM2) with ChatML specials;
    `extra_chars` adds characters (e.g. the LaTeX of `\\boxed{}` answers) after the default ones."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = string.ascii_letters + string.digits + " .,?!+-*/=#$\n:()" + extra_chars
    vocab = {tok: i for i, tok in enumerate(SPECIALS + ["####"] + list(chars))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<|endoftext|>"))
    tok.pre_tokenizer = pre_tokenizers.Split(pattern=__import__("tokenizers").Regex("####|."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens(SPECIALS)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                   unk_token="<|endoftext|>", pad_token="<|im_end|>")
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_model(vocab_size: int, seed: int = 0, num_hidden_layers: int = 2):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=128, intermediate_size=256, num_hidden_layers=num_hidden_layers,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=1024,
                      bos_token_id=1, eos_token_id=2, pad_token_id=2, tie_word_embeddings=True)
    return LlamaForCausalLM(cfg).eval()


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return build_tokenizer()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_tokenizer):
    """A saved tiny model folder (safetensors + tokenizer + chat template), loadable by HF and vLLM."""
    folder = tmp_path_factory.mktemp("tiny-model")
    model = build_model(len(tiny_tokenizer))
    model.generation_config.eos_token_id = 2
    model.save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory, tiny_model_dir):
    """The tiny pipeline (tests/test_pipeline.py's params) reproduced once by `dvc repro` in a temp git +
    DVC project, logging to the project's own MLflow store (mlflow.db in it). Tests that change the
    project copy it first (tests/test_lineage.py clones it) or run after those that do not."""
    from test_pipeline import dvc, make_project

    proj = make_project(tmp_path_factory.mktemp("tiny_pipeline"), tiny_model_dir, num_problems=3)
    dvc(proj, "repro", MLFLOW_TRACKING_URI=None)
    return proj


@pytest.fixture(autouse=True)
def stage_argv(monkeypatch):
    """Stage entrypoints parse their command line (`--model`, `--shard`): a test that runs one in process
    runs it with none, not with pytest's."""
    import sys

    monkeypatch.setattr(sys, "argv", [sys.argv[0]])
