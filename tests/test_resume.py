"""Long stages checkpoint per unit and resume. `sample`, `replicate`, `ablation`, `candidates` and
`dpo_eval` keep each finished unit under .cache/<stage>/<fingerprint>/; a SIGKILLed `replicate`,
`ablation` or `candidates` re-run gives byte-identical outputs and recomputes no finished unit."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from cliffdata.backends import Backend, Generation, GenerationRequest, Sampling
from cliffdata.checkpoint import UnitCheckpoint
from cliffdata.config.problems import PromptConfig
from cliffdata.generate.sampling import sample_traces
from report_fixtures import write_fixture

ROOT = Path(__file__).resolve().parents[1]


class Crash(RuntimeError):
    pass


class Scripted(Backend):
    """Every continuation is `#### 7` then EOS; counts calls and crashes after `limit` of them."""
    name = "scripted"

    def __init__(self, tokenizer, limit: int = 10**9):
        self.ids = tuple(tokenizer.encode("#### 7", add_special_tokens=False)) + (2,)
        self.eos_token_ids, self.limit, self.calls, self.prompts = (2,), limit, 0, []

    def generate(self, requests: list[GenerationRequest], sampling: Sampling) -> list[Generation]:
        if self.calls >= self.limit:
            raise Crash("killed")
        self.calls += 1
        self.prompts += [r.prompt_ids for r in requests]
        return [Generation((self.ids,) * r.n, ("stop",) * r.n) for r in requests]


def test_sample_resumes_per_problem(tmp_path, tiny_tokenizer):
    problems = [{"problem_id": f"arith/a-{k}", "question": f"What is {k} + 1?", "answer": str(k + 1),
                 "answer_format": "hash", "prompt": "p"} for k in range(7)]
    prompts = {"p": PromptConfig()}
    sampling = Sampling(0.7, max_new_tokens=8)
    full = sample_traces(problems, prompts, tiny_tokenizer, Scripted(tiny_tokenizer), sampling, 2, 0, batch_size=2)

    ckpt = UnitCheckpoint(tmp_path / "ckpt")
    with pytest.raises(Crash):
        sample_traces(problems, prompts, tiny_tokenizer, Scripted(tiny_tokenizer, limit=2), sampling, 2, 0,
                      batch_size=2, checkpoint=ckpt)
    assert len(ckpt) == 4                                   # two batches of two problems finished
    backend = Scripted(tiny_tokenizer)
    resumed = sample_traces(problems, prompts, tiny_tokenizer, backend, sampling, 2, 0, batch_size=2,
                            checkpoint=UnitCheckpoint(tmp_path / "ckpt"))
    assert resumed == full
    assert len(backend.prompts) == 3                         # only the three unfinished problems were generated
    # another tag (e.g. another adapter in dpo_eval) is another unit
    other = Scripted(tiny_tokenizer)
    sample_traces(problems, prompts, tiny_tokenizer, other, sampling, 2, 0, batch_size=2,
                  checkpoint=UnitCheckpoint(tmp_path / "ckpt"), tag="adapter:x")
    assert len(other.prompts) == 7


def world(root: Path, tokenizer, num_traces: int) -> None:
    """Traces with one cliff each (report_fixtures), a tiny model at models/base, params for the stages."""
    texts = {f"arith/t{k:02d}#0": (f"So {k} + {k} = {2 * k + 1}.\n#### {2 * k + 1}", False, 4) for k in range(num_traces)}
    write_fixture(root, tokenizer, texts, optional=False)


def params(model_dir: Path) -> dict:
    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    data["model"] = {"source": str(model_dir)}
    data["engine"].update(backend="hf", dtype="float32", hf_max_batch=64)
    data["ablation"].update(num_rollouts=16, ks=[1, 2, 4, 8, 16])
    data["ablation"]["sampling"].update(max_new_tokens=6)
    # a small control pool: its sampled traces and fresh estimates are units too
    data["ablation"]["control_pool"].update(num_samples=2, max_estimates=4, estimates_per_round=2)
    data["prompts"]["p"] = {"instruction": "", "shots": []}          # the fixture's problems' prompt
    # the fixture has no replicate stage: p_prev from the detection rollouts (the units resume the same way)
    data["candidates"].update(top_k=3, num_rollouts=16, fresh_estimates=False)
    data["candidates"]["sampling"].update(max_new_tokens=6)
    data["dpo_pairs"].update(top_k=3)
    return data


def run_stage(proj: Path, stage: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, str(ROOT / "pipeline" / f"{stage}.py")], cwd=proj, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
@pytest.mark.parametrize("stage,outputs", [
    ("replicate", ["data/replicate/replicate.parquet", "metrics/replicate.json"]),
    ("ablation", ["data/ablation/ablation.parquet", "data/ablation/pass_at_k.parquet", "metrics/ablation.json"]),
    ("candidates", ["data/candidates/candidates.parquet", "data/candidates/control.parquet", "metrics/cpm.json"]),
])
def test_sigkilled_stage_resumes_to_identical_outputs(tmp_path, tiny_tokenizer, tiny_model_dir, stage, outputs):
    proj = tmp_path / "proj"
    proj.mkdir()
    num_traces = 12
    world(proj, tiny_tokenizer, num_traces)
    import shutil
    shutil.copytree(tiny_model_dir, proj / "models/base")
    (proj / "params.yaml").write_text(yaml.safe_dump(params(tiny_model_dir), sort_keys=False))

    proc = run_stage(proj, stage)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:]
    first = re.search(rf"{stage}: 0 units resumed from \S+, (\d+) computed", out)
    # one unit per problem (candidates: the cliffs' candidates, then the DPO control positions)
    assert first and int(first[1]) >= num_traces, out[-2000:]
    num_units = int(first[1])
    reference = {p: (proj / p).read_bytes() for p in outputs}
    assert not list((proj / ".cache" / stage).glob("*/*.json")), "checkpoint not removed after success"
    for p in outputs:
        (proj / p).unlink()

    proc = run_stage(proj, stage)
    deadline = time.time() + 300
    while time.time() < deadline and len(list((proj / ".cache" / stage).glob("*/*.json"))) < 3:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(list((proj / ".cache" / stage).glob("*/*.json")))
    assert 3 <= done < num_units, f"kill came too late or too early ({done} units done)"
    assert not any((proj / p).exists() for p in outputs)

    proc = run_stage(proj, stage)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:]
    m = re.search(rf"{stage}: (\d+) units resumed from \S+, (\d+) computed", out)
    assert m and (int(m[1]), int(m[2])) == (done, num_units - done), out[-2000:]
    assert {p: (proj / p).read_bytes() for p in outputs} == reference
