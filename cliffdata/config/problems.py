"""`problems` and `prompts`: the problem sources and the named chat prompts."""
from __future__ import annotations

from dataclasses import dataclass, field

from cliffdata.arith import FAMILIES as ARITH_FAMILIES
from cliffdata.config.validate import check, check_range


DATASETS = ("arith", "gsm8k", "gsm1k", "math500", "aime")
ANSWER_FORMATS = ("hash", "boxed")


@dataclass(frozen=True)
class Shot:
    question: str
    answer: str


@dataclass(frozen=True)
class PromptConfig:
    """A named prompt: the instruction appended to each question and worked examples as prior turns.

    `answer_format` is the answer format the prompt asks for (`boxed` for "put your final answer within
    \\boxed{}", `hash` for "give the final answer after ####"); when omitted it is read from the text
    (`asks_for`). Problems take their grading format from their prompt unless a source sets it.
    """
    instruction: str = ""
    system: str | None = None
    shots: tuple[Shot, ...] = ()
    answer_format: str | None = None

    def __post_init__(self):
        check(self.answer_format in (None, *ANSWER_FORMATS),
              f"answer_format must be one of {ANSWER_FORMATS}, got {self.answer_format!r}")

    @property
    def asks_for(self) -> str | None:
        """The declared answer format, else the one the instruction and examples show (None: neither)."""
        if self.answer_format is not None:
            return self.answer_format
        text = " ".join([self.instruction, self.system or ""] + [s.answer for s in self.shots])
        found = [fmt for fmt, marker in (("boxed", "\\boxed"), ("hash", "####")) if marker in text]
        return found[0] if len(found) == 1 else None


@dataclass(frozen=True)
class SourceConfig:
    """One problem source: the embedded generator (`arith`) or a file/hub dataset."""
    dataset: str
    path: str | None = None            # local JSONL/Parquet file, or a hub dataset id
    split: str = "test"                # hub split
    name: str | None = None            # hub config name (e.g. "main" for openai/gsm8k)
    subset: int | None = None          # paper: GSM1K-100 (seeded), MATH500-100 (stratified by level)
    seed: int = 42
    prompt: str = "zeroshot_boxed"
    answer_format: str | None = None   # default: what the prompt asks for, else hash for arith/gsm*, boxed for math500/aime
    max_new_tokens: int | None = None  # this source's token budget in sample/rollouts/ablation/candidates (paper: GSM 1024, MATH 2048, AIME 4096)
    families: dict[str, int] = field(default_factory=dict)  # arith only: family -> count
    family_prompts: dict[str, str] = field(default_factory=dict)  # arith only: family -> prompt

    def __post_init__(self):
        check(self.dataset in DATASETS, f"problems.sources.dataset must be one of {DATASETS}, got {self.dataset!r}")
        if self.dataset == "arith":
            check(bool(self.families), "problems.sources: dataset 'arith' needs `families`, got none")
        else:
            check(self.path is not None, f"problems.sources: dataset {self.dataset!r} needs a `path`")
        check(self.answer_format in (None, *ANSWER_FORMATS),
              f"answer_format must be one of {ANSWER_FORMATS}, got {self.answer_format!r}")
        check(self.subset is None or self.subset > 0, f"subset must be positive, got {self.subset}")
        check(self.max_new_tokens is None or self.max_new_tokens > 0,
              f"max_new_tokens must be > 0, got {self.max_new_tokens}")
        for family, count in self.families.items():           # the generator's families (cliffdata/arith.py)
            check(family in ARITH_FAMILIES, f"families.{family}: no such arith family (known: {sorted(ARITH_FAMILIES)})")
            check(0 <= count <= ARITH_FAMILIES[family].capacity,
                  f"families.{family} must be in [0, {ARITH_FAMILIES[family].capacity}] (the family's distinct "
                  f"questions), got {count!r}")


@dataclass(frozen=True)
class ProblemsConfig:
    sources: tuple[SourceConfig, ...]
    on_bad_row: str = "error"          # error | skip (counted in metrics/problems.json)
    max_chars: int = 20000             # the longest question or gold answer, in characters; a longer one is a bad row

    def __post_init__(self):
        check(self.on_bad_row in ("error", "skip"), f"problems.on_bad_row must be error|skip, got {self.on_bad_row!r}")
        check(len(self.sources) > 0, "problems.sources is empty")
        check_range("problems.max_chars", self.max_chars, 1)
