"""Every stage is a fresh interpreter, and torch, transformers and vLLM cost 10-15 s to import before any
work: the stages that read no model import none of them, neither when the stage module loads nor on
main()'s way (the lazy imports of the functions it calls); `cpm_shift`, which reads models, imports them
in main() only, once its params are read."""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "vllm")

# stage -> what main() imports inside the functions it calls, besides main()'s own imports (found below)
MODEL_FREE = {
    "problems": [],
    "rollouts_merge": [],
    "cliffs": ["cliffdata.scan", "cliffdata.cliffs.stats"],
    "entropy": ["cliffdata.cliffs.stats"],
    "dpo_pairs": [],
    "summary": [],
    "report": ["cliffdata.study", "cliffdata.publish.report.tokenizer"],     # and models/base's tokenizer: PROBE
    "study_tables": [],
    "study_cpm_shift": [],                  # one model (no study.models): main() loads no model or tokenizer
    "risk": ["cliffdata.risk.model", "cliffdata.risk.metrics"],
}
MODEL_IN_MAIN = ("cpm_shift",)

PROBE = """
import importlib, importlib.util, json, sys
stages, heavy, folder = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3]
loaded = {}
for stage, lazy in stages.items():
    spec = importlib.util.spec_from_file_location("stage_" + stage, f"pipeline/{stage}.py")
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
    for name in lazy:
        importlib.import_module(name)
    if stage == "report":           # the tokenizer the report decodes with, of a saved model folder
        from cliffdata.publish.report.tokenizer import load_tokenizer
        load_tokenizer(folder).decode([1, 2, 3], skip_special_tokens=False)
    loaded[stage] = [m for m in heavy if m in sys.modules]
print(json.dumps(loaded))
"""


def main_imports(stage: str) -> list[str]:
    """The modules pipeline/<stage>.py imports inside its main()."""
    tree = ast.parse((ROOT / "pipeline" / f"{stage}.py").read_text())
    (main,) = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "main"]
    names = []
    for node in ast.walk(main):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.append(node.module)
    return names


@pytest.mark.integration
def test_stages_import_only_what_they_use(tiny_model_dir):
    """One interpreter imports the stages one after another: the first to load a heavy module is named."""
    stages = {s: main_imports(s) + lazy for s, lazy in MODEL_FREE.items()} | {s: [] for s in MODEL_IN_MAIN}
    out = subprocess.run([sys.executable, "-c", PROBE, json.dumps(stages), json.dumps(HEAVY), str(tiny_model_dir)],
                         cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert loaded == {s: [] for s in stages}, f"heavy modules imported, by the first stage named: {loaded}"


def test_every_stage_is_classified():
    """A new stage says whether it reads a model: model-free ones join MODEL_FREE."""
    reads_a_model = {"model", "sample", "token_stats", "rollouts", "replicate", "ablation", "candidates",
                     "dpo_train", "dpo_eval", "cliff_count", "risk_labels"}
    stages = {p.stem for p in (ROOT / "pipeline").glob("*.py")}
    assert stages == reads_a_model | set(MODEL_FREE) | set(MODEL_IN_MAIN)
