"""The tokenizer the report decodes with, loaded without transformers where that decodes the same.

The report only decodes (`decode(ids, skip_special_tokens=False)`, cliffdata/publish/report/data.py). A fast
transformers tokenizer decodes with its backend `tokenizers.Tokenizer`, then cleans up spaces when
`clean_up_tokenization_spaces` is set. transformers' AutoTokenizer (5.x) loads a folder saved as
`TokenizersBackend` (what `save_pretrained` writes for the embedded SmolLM2 and for a tokenizer built
from a `tokenizers.Tokenizer`) as the Tokenizer of its tokenizer.json, with only encoding settings
changed (truncation, padding, post-processor, pre-tokenizer), unless:

- the folder's config.json routes it to a class of its own (a model type transformers overrides, remote
  code: `auto_map`, a `model_name`), or tokenizer_config.json asks for another backend or class;
- a special token of tokenizer_config.json (named, extra, or in `added_tokens_decoder`) or the pad token of
  tokenizer.json's padding is not an added token of tokenizer.json with the same settings: transformers
  adds it, which changes its decoding;
- legacy special_tokens_map.json / added_tokens.json name more tokens;
- `clean_up_tokenization_spaces` is set.

`load_tokenizer` reads tokenizer.json with `tokenizers` alone where none of these holds (the decoded text
is the same, and the report imports neither transformers nor torch), else returns AutoTokenizer's.
tests/test_report_tokenizer.py checks that both decode every token id and sampled id windows alike.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

# config.json model types whose folders AutoTokenizer loads by the tokenizer_class of tokenizer_config.json
# (transformers registers no tokenizer of their own and does not override a hub's class for them)
PLAIN_MODEL_TYPES = ("llama",)
ADDED_TOKEN_FIELDS = ("content", "single_word", "lstrip", "rstrip", "normalized", "special")


class Decoder:
    """A `tokenizers.Tokenizer` behind a transformers tokenizer's `decode`."""

    def __init__(self, tokenizer, name_or_path: str):
        self.backend_tokenizer = tokenizer
        self.name_or_path = name_or_path

    def decode(self, token_ids: int | Sequence[int], skip_special_tokens: bool = False) -> str:
        ids = [token_ids] if isinstance(token_ids, int) else token_ids
        return self.backend_tokenizer.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)


def plain_backend(folder: str | Path) -> bool:
    """Whether AutoTokenizer would decode with the unchanged Tokenizer of `folder`/tokenizer.json (above)."""
    folder = Path(folder)
    files = {name: folder / name for name in ("tokenizer.json", "tokenizer_config.json", "config.json")}
    if not (files["tokenizer.json"].is_file() and files["tokenizer_config.json"].is_file()):
        return False
    if (folder / "special_tokens_map.json").exists() or (folder / "added_tokens.json").exists():
        return False
    config = json.loads(files["tokenizer_config.json"].read_text(encoding="utf-8"))
    if (config.get("tokenizer_class") != "TokenizersBackend" or config.get("backend", "tokenizers") != "tokenizers"
            or "auto_map" in config or config.get("clean_up_tokenization_spaces")
            or config.get("clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output")):
        return False
    if files["config.json"].is_file():
        model = json.loads(files["config.json"].read_text(encoding="utf-8"))
        if model.get("model_type") not in PLAIN_MODEL_TYPES or "auto_map" in model or "model_name" in model:
            return False
    backend = json.loads(files["tokenizer.json"].read_text(encoding="utf-8"))
    added = {t["id"]: t for t in backend.get("added_tokens") or []}
    contents = {t["content"] for t in added.values()}
    for index, token in (config.get("added_tokens_decoder") or {}).items():
        if not isinstance(token, dict) or int(index) not in added or any(
                token.get(f) != added[int(index)][f] for f in ADDED_TOKEN_FIELDS):
            return False
    # named special tokens (bos_token, ..., a model's own *_token) and extra ones: transformers adds those
    # whose content is not an added token yet
    named = [v for k, v in config.items() if k.endswith("_token") and isinstance(v, (str, dict))]
    if backend.get("padding"):                      # tokenizer.json's pad token, when the config names none
        named.append(backend["padding"]["pad_token"])
    for key in ("extra_special_tokens", "additional_special_tokens"):
        extra = config.get(key) or []
        named += list(extra.values()) if isinstance(extra, dict) else list(extra)
    return all((t.get("content") if isinstance(t, dict) else t) in contents for t in named)


def load_tokenizer(folder: str | Path):
    """What the report decodes a model folder's token ids with: a `Decoder` of tokenizer.json where
    `plain_backend` holds, else transformers' AutoTokenizer (the same text either way)."""
    if plain_backend(folder):
        from tokenizers import Tokenizer

        return Decoder(Tokenizer.from_file(str(Path(folder) / "tokenizer.json")), str(folder))
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder)
