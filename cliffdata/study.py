"""A study of several models in one pipeline (the paper's RQ3: family and scale).

The pipeline's own model (`model`) is the study's first model, with its outputs where they always were.
Every entry of `study.models` runs the per-model stages (model, sample, token_stats, rollouts, cliffs,
replicate, ablation, candidates, entropy) as DVC `foreach` stages `study_<stage>@<name>`, with the same
entrypoints given `--model <name>`: each writes under the model's own root `study/<name>/`, which has the
project's layout (data/, models/base, metrics/, plots/, .cache/), so the code of a stage is the same for
every model: it takes its paths from the model's `Layout`, and the process's working directory and
`schema.PATHS` stay the project's. The problems are shared (read from the project's data/problems). A
model's params are the project's with `model` set to its source and its `overrides` applied
(config.study_params).

    params, args, layout = stage_params("sample", argv)   # in a stage entrypoint: --model NAME is study/NAME
    layout.data("traces"), layout.path("models/base")      # study/NAME/data/sample/traces.parquet, ...
    for m in members(params): m.name, m.layout            # the study's models, the pipeline's own first
"""
from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cliffdata import schema
from cliffdata.config.load import parse_params, read_yaml, study_params
from cliffdata.config.params import Params

STUDY_DIR = Path("study")


@dataclass(frozen=True)
class Layout:
    """Where one model's per-model outputs live: under `root` (`.` for the pipeline's own model,
    study/<name> for a study model), in the project's layout (data/, models/base, metrics/, plots/,
    .cache/). The problems are shared: always the project's. `enter` and `members` give roots relative to
    the project root, where every stage runs, so the pipeline's own model's paths are the project's as
    they always were."""
    root: Path

    def path(self, relative: str | Path) -> Path:
        """A project-relative path (e.g. "models/base", "metrics/sample.json") under this root; the shared
        problems stay the project's."""
        relative = Path(relative)
        return relative if relative == Path(schema.PATHS["problems"]) else self.root / relative

    def data(self, name: str) -> Path:
        """Dataset `name`'s file (schema.PATHS) under this root, the shared problems the project's."""
        return self.path(schema.PATHS[name])


@dataclass(frozen=True)
class Member:
    """One model of the study: its name (the `model` column of the study's tables and views), the root its
    per-model outputs live under (`.` for the pipeline's own model), family and size (billions)."""
    name: str
    root: Path
    source: str
    family: str
    size_b: float | None

    @property
    def layout(self) -> Layout:
        """This model's paths (`layout.data("cliffs")`, `layout.path("models/base")`)."""
        return Layout(self.root)


def members(params: Params) -> list[Member]:
    """The pipeline's model, then `study.models` in their params order."""
    out = [Member(params.model.name, Path("."), params.model.source, params.model.family_name,
                  params.model.size_billions)]
    for name, m in params.study.models.items():
        out.append(Member(name, STUDY_DIR / name, m.source, m.family_name, m.size_billions))
    return out


def enter(name: str | None, params_path: str | Path = "params.yaml") -> tuple[Params, Layout]:
    """The params and layout of a stage run for study model `name` (None: the pipeline's own model, at the
    project root `.`). Changes nothing: the stage reads and writes through the layout.

    For a study model: its own params (config.study_params), a local model source made absolute (the
    `model` stage records it in models/base/provenance.json: the folder it came from, unambiguously), and
    the layout under study/<name>/.
    """
    data = read_yaml(params_path)
    params = parse_params(data)
    if name is None:
        return params, Layout(Path("."))
    if name not in params.study.models:
        known = ", ".join(params.study.models) or "none"
        raise SystemExit(f"--model {name}: study.models has no such model (known: {known}); the pipeline's own "
                         f"model ({params.model.name}) runs without --model")
    own = study_params(data, name)
    source = Path(own.model.source)
    if own.model.source != "embedded" and not source.is_absolute() and source.exists():
        own = dataclasses.replace(own, model=dataclasses.replace(own.model, source=str(source.resolve())))
    return own, Layout(STUDY_DIR / name)


def stage_params(stage: str, argv: list[str] | None = None,
                 arguments: Callable[[argparse.ArgumentParser], None] | None = None,
                 doc: str | None = None) -> tuple[Params, argparse.Namespace, Layout]:
    """Parse a per-model stage's command line (`--model NAME` plus the stage's own `arguments`): (params,
    args, layout), the model's params and where its outputs live (`enter`)."""
    parser = argparse.ArgumentParser(prog=f"pipeline/{stage}.py", description=doc)
    parser.add_argument("--model", default=None, metavar="NAME",
                        help="a study.models entry: run this stage for it, under study/NAME/ (default: the "
                             "pipeline's own model, at the project root)")
    if arguments is not None:
        arguments(parser)
    args = parser.parse_args(argv)
    params, layout = enter(args.model)
    return params, args, layout
