"""`study`: more models through the per-model stages, each with overrides of its own stages' params."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from cliffdata.config.model import ModelConfig
from cliffdata.config.validate import check


# The sections a study model may override (`study.models.<name>.overrides`): what its own stages read. The
# cliff definition (`cliffs`), the problems and prompts stay one for every model, so the tables compare.
STUDY_OVERRIDABLE = ("engine", "sample", "token_stats", "rollouts", "replicate", "ablation", "candidates")
STUDY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")        # no ".": DVC reads study.models.<name> as a params path


@dataclass(frozen=True)
class StudyModel(ModelConfig):
    """One more model of the study: its source, family, size, and overrides of its own stages' params
    (dotted keys, e.g. `rollouts.sampling.temperature: 0.6`)."""
    source: str = ""
    overrides: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        super().__post_init__()
        for key in self.overrides:
            check(key.split(".", 1)[0] in STUDY_OVERRIDABLE and "." in key,
                  f"overrides: {key!r} is not a key of {', '.join(STUDY_OVERRIDABLE)} (the cliff definition, "
                  f"problems and prompts are the same for every model of a study)")


@dataclass(frozen=True)
class StudyConfig:
    """`study`: more models through the per-model stages (DVC foreach, outputs under study/<name>/), then the
    cross-model stages (`study_cpm_shift`, `study_tables`). The pipeline's own model (`model`) is the study's
    first model; `models` maps a name (a folder name) to a source."""
    models: dict[str, StudyModel] = field(default_factory=dict)

    def __post_init__(self):
        for name in self.models:
            check(STUDY_NAME.fullmatch(str(name)) is not None,
                  f"models: {name!r} must be letters, digits, '_' and '-' (a folder name, and no '.': DVC reads "
                  f"study.models.<name> as a params path), e.g. Qwen3-0_6B")
