"""A study of several models in one pipeline (the paper's RQ3: family and scale).

The pipeline's own model (`model`) is the study's first model, with its outputs where they always were.
Every entry of `study.models` runs the per-model stages (model, sample, token_stats, rollouts, cliffs,
replicate, ablation, candidates, entropy) as DVC `foreach` stages `study_<stage>@<name>`, with the same
entrypoints given `--model <name>`: they run under the model's own root `study/<name>/`, which has the
project's layout (data/, models/base, metrics/, plots/), so the code of a stage is the same for every model.
The problems are shared (read from the project's data/problems). A model's params are the project's with
`model` set to its source and its `overrides` applied (config.study_params).

    params, args = stage_params("sample", argv)      # in a stage entrypoint: --model NAME enters study/NAME
    for m in members(params): m.name, m.root          # the study's models, the pipeline's own first
"""
from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


from cliffdata import schema
from cliffdata.config.load import parse_params, read_yaml, study_params
from cliffdata.config.params import Params

STUDY_DIR = Path("study")


@dataclass(frozen=True)
class Member:
    """One model of the study: its name (the `model` column of the study's tables and views), the root its
    per-model outputs live under (`.` for the pipeline's own model), family and size (billions)."""
    name: str
    root: Path
    source: str
    family: str
    size_b: float | None

    def path(self, relative: str | Path) -> Path:
        """A project-relative path (e.g. schema.PATHS["cliffs"], "models/base") under this model's root; the
        shared problems stay the project's."""
        relative = Path(relative)
        return relative if self.root == Path(".") or relative == Path(schema.PATHS["problems"]) \
            else self.root / relative


def members(params: Params) -> list[Member]:
    """The pipeline's model, then `study.models` in their params order."""
    out = [Member(params.model.name, Path("."), params.model.source, params.model.family_name,
                  params.model.size_billions)]
    for name, m in params.study.models.items():
        out.append(Member(name, STUDY_DIR / name, m.source, m.family_name, m.size_billions))
    return out


def enter(name: str | None, params_path: str | Path = "params.yaml") -> Params:
    """The params of a stage run for study model `name` (None: the pipeline's own model, nothing changes).

    For a study model: its own params (config.study_params), then the process moves into study/<name>/
    (created if missing), with the shared problems' path made absolute first and a local model source
    resolved against the project.
    """
    data = read_yaml(params_path)
    params = parse_params(data)
    if name is None:
        return params
    if name not in params.study.models:
        known = ", ".join(params.study.models) or "none"
        raise SystemExit(f"--model {name}: study.models has no such model (known: {known}); the pipeline's own "
                         f"model ({params.model.name}) runs without --model")
    own = study_params(data, name)
    source = Path(own.model.source)
    if own.model.source != "embedded" and not source.is_absolute() and source.exists():
        own = dataclasses.replace(own, model=dataclasses.replace(own.model, source=str(source.resolve())))
    # one process runs one stage for one model: the shared problems are read from the project's folder
    schema.PATHS["problems"] = str(Path(schema.PATHS["problems"]).resolve())
    root = STUDY_DIR / name
    root.mkdir(parents=True, exist_ok=True)
    os.chdir(root)
    return own


def stage_params(stage: str, argv: list[str] | None = None,
                 arguments: Callable[[argparse.ArgumentParser], None] | None = None,
                 doc: str | None = None) -> tuple[Params, argparse.Namespace]:
    """Parse a per-model stage's command line (`--model NAME` plus the stage's own `arguments`) and enter
    the model's root: (params, args)."""
    parser = argparse.ArgumentParser(prog=f"pipeline/{stage}.py", description=doc)
    parser.add_argument("--model", default=None, metavar="NAME",
                        help="a study.models entry: run this stage for it, under study/NAME/ (default: the "
                             "pipeline's own model, at the project root)")
    if arguments is not None:
        arguments(parser)
    args = parser.parse_args(argv)
    return enter(args.model), args
