"""A study of several models in one pipeline: params, the per-model roots, both CPM-shift directions
on a scripted example (by hand), the study's SQL tables on seeds (zero rows too), and `dvc repro` of a
study where adding a model re-runs only its own stages and the cross-model ones."""
from __future__ import annotations

import copy
import json
import re
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from cliffdata import schema
from cliffdata.analysis import duck, sandbox
from cliffdata.config.load import parse_params, study_params
from cliffdata.experiments.cpm_shift import study_pairs
from cliffdata.study import Layout, Member, enter, members, stage_params
from tests.conftest import build_model, build_tokenizer

ROOT = Path(__file__).resolve().parents[1]


def base_params(**study_models) -> dict:
    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    data["model"] = {"source": "embedded"}
    data["study"] = {"models": study_models}
    return data


# --- params -----------------------------------------------------------------------------------------

def test_the_default_study_is_the_pipelines_model_alone():
    params = parse_params(base_params())
    [only] = members(params)
    assert (only.name, only.root, only.family, only.size_b) == ("SmolLM2-135M-Instruct", Path("."), "SmolLM2", 0.135)


def test_study_members_in_params_order_with_family_and_size():
    params = parse_params(base_params(**{
        "Qwen3-8B": {"source": "Qwen/Qwen3-8B"},
        "llama-1b": {"source": "meta-llama/Llama-3.2-1B-Instruct", "family": "Llama", "size_b": 1.24}}))
    m = members(params)
    assert [x.name for x in m] == ["SmolLM2-135M-Instruct", "Qwen3-8B", "llama-1b"]
    assert (m[1].root, m[1].family, m[1].size_b) == (Path("study/Qwen3-8B"), "Qwen3", 8.0)
    assert (m[2].family, m[2].size_b) == ("Llama", 1.24)                # explicit beats the name


@pytest.mark.parametrize("models, message", [
    ({"Qwen3-0.6B": {"source": "q"}}, r"study\.models: 'Qwen3-0\.6B' must be letters, digits"),
    ({"a": {"source": ""}}, r"study\.models\.a\.source must be"),
    ({"a": {}}, r"study\.models\.a\.source must be"),
    ({"a": {"source": "q", "size_b": -1}}, r"study\.models\.a\.size_b must be > 0"),
    ({"a": {"source": "q", "overrides": {"cliffs.test.delta0": 0.2}}}, r"study\.models\.a\.overrides: 'cliffs\.test\.delta0'"),
    ({"a": {"source": "q", "overrides": {"rollouts.sampling.temperature": "hot"}}},
     r"study\.models\.a\.overrides: rollouts\.sampling\.temperature: expected float"),
    ({"a": {"source": "q", "overrides": {"rollouts.nope": 1}}}, r"study\.models\.a\.overrides: rollouts: unknown keys"),
    ({"SmolLM2-135M-Instruct": {"source": "q"}}, r"the pipeline's own model .* has that name"),
])
def test_bad_study_entries_name_their_key(models, message):
    with pytest.raises(ValueError, match=message):
        parse_params(base_params(**models))


def test_a_study_models_params_are_the_projects_with_its_source_and_overrides():
    data = base_params(b={"source": "org/B-1B", "overrides": {"rollouts.sampling.temperature": 0.6,
                                                                "sample.seed": 3}})
    own = study_params(data, "b")
    assert own.model.source == "org/B-1B" and own.model.name == "B-1B"
    assert own.rollouts.sampling.temperature == 0.6 and own.sample.seed == 3
    assert own.cliffs == parse_params(data).cliffs and own.study.models == {}
    assert data["study"]["models"]["b"]["overrides"]["sample.seed"] == 3     # the raw params are not changed


def test_enter_returns_the_models_layout_and_changes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "local-model").mkdir()
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(base_params(b={"source": "local-model"})))
    paths = dict(schema.PATHS)
    params, layout = enter(None)
    assert params.model.source == "embedded" and layout == Layout(Path("."))
    own, layout = enter("b")
    assert layout == Layout(Path("study/b")) and layout.data("traces") == Path("study/b") / schema.PATHS["traces"]
    assert layout.data("problems") == Path(schema.PATHS["problems"])           # shared: the project's
    assert own.model.source == str(tmp_path / "local-model")                 # a local source, made absolute
    assert Path.cwd() == tmp_path and schema.PATHS == paths and not (tmp_path / "study").exists()
    with pytest.raises(SystemExit, match=r"--model nope: study\.models has no such model \(known: b\)"):
        enter("nope")


def test_stage_params_parse_the_model_and_the_stages_arguments(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(base_params(b={"source": "org/B-1B"})))
    params, args, layout = stage_params("rollouts", ["--model", "b", "--shard", "all"],
                                        arguments=lambda ap: ap.add_argument("--shard"))
    assert (params.model.source, args.model, args.shard, layout.root) == ("org/B-1B", "b", "all", Path("study/b"))
    assert stage_params("sample", [])[2] == Layout(Path("."))
    assert Path.cwd() == tmp_path


def test_member_paths_are_under_its_root_but_the_problems():
    m = Member("b", Path("study/b"), "src", "fam", None)
    assert m.layout.path("models/base") == Path("study/b/models/base")
    assert m.layout.data("cliffs") == Path("study/b") / schema.PATHS["cliffs"]
    assert m.layout.data("problems") == Path(schema.PATHS["problems"])
    own = Member("a", Path("."), "src", "fam", None).layout
    assert own.path("metrics/sample.json") == Path("metrics/sample.json")      # the project's own paths, as given


def test_study_pairs_both_directions_and_refusals_named(tiny_tokenizer):
    other = build_tokenizer(extra_chars="€")
    pairs, refused = study_pairs(["a", "b", "c"], {"a": tiny_tokenizer, "b": build_tokenizer(), "c": other})
    assert pairs == [("a", "b"), ("b", "a")]
    assert set(refused) == {"a -> c", "c -> a", "b -> c", "c -> b"}
    assert all(v.startswith("tokenizer mismatch (vocab size)") for v in refused.values())


# --- both CPM-shift directions on a scripted example, by hand --------------------------------------

def scripted_root(root: Path, trace_id: str, prompt: list[int], response: list[int], cliffs: dict[int, list[int]],
                  category: str) -> None:
    """One model's datasets: a trace, cliffs at `cliffs` {token_index: [cliff token, other cliff ids...]}
    (each with one non-cliff candidate, id 40), token stats with the cliff token's rank."""
    schema.write("traces", [dict(trace_id=trace_id, problem_id="p", sample_index=0, prompt_ids=prompt,
                                 response_ids=response, response_text="x", extracted_answer="1", is_correct=False,
                                 finish_reason="stop", num_tokens=len(response))], root / schema.PATHS["traces"])
    schema.write("cliffs", [dict(trace_id=trace_id, problem_id="p", token_index=i, token_id=ids[0], category=category,
                                 p_prev=0.8, potential=0.1, delta=0.7, is_correct=False) for i, ids in cliffs.items()],
                 root / schema.PATHS["cliffs"])
    candidates = []
    for i, ids in cliffs.items():
        for r, cid in enumerate(ids + [40]):
            candidates.append(dict(trace_id=trace_id, token_index=i, candidate_rank=r + 1, candidate_id=cid,
                                   prob=0.1 * (r + 1), is_cliff_token=r == 0, is_cliff=cid != 40))
    schema.write("candidates", candidates, root / schema.PATHS["candidates"])
    schema.write("token_stats", [dict(trace_id=trace_id, token_index=i, token_id=ids[0], rank=2) for i, ids in cliffs.items()],
                 root / schema.PATHS["token_stats"])


def save_model(folder: Path, tokenizer, seed: int) -> None:
    model = build_model(len(tokenizer), seed=seed)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def hand_cpm(model_dir: Path, prefix: list[int], members_: list[int], top_k: int) -> float:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        logits = model(torch.tensor([prefix])).logits[0, -1].double()
    probs = torch.softmax(logits, -1)
    top = set(probs.topk(top_k).indices.tolist())
    return sum(float(probs[t]) for t in members_ if t in top)


def test_both_directions_read_each_sides_own_cliffs_and_equal_a_hand_computation(tmp_path, monkeypatch):
    """A (the pipeline's model), B (same tokenizer, other weights) and C (another tokenizer): A's cliff at
    token 2 read by B, B's cliffs at tokens 1 and 3 read by A, C refused both ways with the check named."""
    import importlib.util

    tok = build_tokenizer()
    save_model(tmp_path / "models/base", tok, seed=0)
    save_model(tmp_path / "study/b/models/base", build_tokenizer(), seed=1)
    save_model(tmp_path / "study/c/models/base", build_tokenizer(extra_chars="€"), seed=2)
    prompt_a, resp_a = [1, 24, 22, 8], [30, 31, 32, 33, 34]
    prompt_b, resp_b = [1, 25, 23], [35, 36, 37, 38]
    scripted_root(tmp_path, "t", prompt_a, resp_a, {2: [32, 17]}, "uncertain")
    scripted_root(tmp_path / "study/b", "t", prompt_b, resp_b, {1: [36, 12, 13], 3: [38]}, "sampled_off")
    scripted_root(tmp_path / "study/c", "t", prompt_b, resp_b, {0: [35]}, "sampled_off")
    data = base_params(b={"source": "b-src", "family": "tiny", "size_b": 0.2},
                       c={"source": "c-src", "family": "other", "size_b": 0.3})
    data["model"] = {"source": "tiny-a", "family": "tiny", "size_b": 0.1}
    data["cpm_shift"]["top_k"] = 5
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(data))
    monkeypatch.chdir(tmp_path)
    spec = importlib.util.spec_from_file_location("stage_study_cpm_shift", ROOT / "pipeline/study_cpm_shift.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main()

    rows = {(r["source_model"], r["eval_model"], r["token_index"]): r
            for r in schema.read("study_cpm_shift", tmp_path / schema.PATHS["study_cpm_shift"]).to_pylist()}
    assert set(rows) == {("tiny-a", "b", 2), ("b", "tiny-a", 1), ("b", "tiny-a", 3)}     # each side's own cliffs
    # A -> B: B reads A's prefix; the cliff set {32, 17} (40 is not a cliff); cpm_source = 0.1 + 0.2
    ab = rows[("tiny-a", "b", 2)]
    assert ab["cpm_source"] == pytest.approx(0.3) and ab["category"] == "uncertain" and ab["rank_source"] == 2
    assert ab["cpm_eval"] == pytest.approx(hand_cpm(tmp_path / "study/b/models/base", prompt_a + resp_a[:2], [32, 17], 5),
                                           abs=1e-6)
    assert ab["delta_cpm"] == pytest.approx(ab["cpm_eval"] - 0.3)
    # B -> A: A reads B's prefixes
    for i, ids, source_cpm in ((1, [36, 12, 13], 0.6), (3, [38], 0.1)):
        ba = rows[("b", "tiny-a", i)]
        assert ba["cpm_source"] == pytest.approx(source_cpm) and ba["category"] == "sampled_off"
        assert ba["cpm_eval"] == pytest.approx(hand_cpm(tmp_path / "models/base", prompt_b + resp_b[:i], ids, 5), abs=1e-6)
    record = json.loads((tmp_path / "metrics/study_cpm_shift.json").read_text())
    assert record["pairs"] == ["tiny-a -> b", "b -> tiny-a"]
    assert set(record["refused"]) == {"tiny-a -> c", "c -> tiny-a", "b -> c", "c -> b"}
    assert "tokenizer mismatch (vocab size)" in record["refused"]["tiny-a -> c"]

    # the tables stage over the same roots: ΔCPM by direction, scale up / down
    spec = importlib.util.spec_from_file_location("stage_study_tables", ROOT / "pipeline/study_tables.py")
    tables = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tables)
    schema.write("trace_cliffs", [], tmp_path / schema.PATHS["trace_cliffs"])
    tables.main()
    study = json.loads((tmp_path / "metrics/study.json").read_text())
    assert study["models"] == ["tiny-a", "b", "c"]
    up, down = study["cpm_shift"]["tiny-a -> b/all"], study["cpm_shift"]["b -> tiny-a/all"]
    assert up["scale"] == "up" and down["scale"] == "down" and up["num_cliffs"] == 1 and down["num_cliffs"] == 2
    assert down["delta_cpm_mean"] == pytest.approx(
        (rows[("b", "tiny-a", 1)]["delta_cpm"] + rows[("b", "tiny-a", 3)]["delta_cpm"]) / 2, abs=1e-6)
    assert study["cpm"]["b"]["num_sampled_off"] == 2 and study["cpm"]["c"]["num_cliffs"] == 1
    assert "## ΔCPM by direction" in (tmp_path / "metrics/study.md").read_text()


# --- the study's SQL tables on a seed -----------------------------------------------------------------

def seed_study(tmp_path: Path) -> list[Member]:
    """Two models: `a` (3 traces: correct with no cliff, failed with two, ungradable with one) and `b`
    (one failed trace with one cliff), with candidates for the CPM table."""
    def write_root(root: Path, traces: dict, cliffs: list[tuple]):
        schema.write("trace_cliffs", [dict(trace_id=t, problem_id="p", is_correct=c, num_tokens=n, num_scored=n,
                                           num_cliffs=sum(x[0] == t for x in cliffs), expected_false_cliffs=e,
                                           false_cliffs_variance=e * (1 - e), null_fire_cells=[{"q": e, "num_pairs": 1}])
                                      for t, (c, n, e) in traces.items()],
                     root / schema.PATHS["trace_cliffs"])
        schema.write("cliffs", [dict(trace_id=t, token_index=i, category=cat, is_greedy=g) for t, i, cat, g, _ in cliffs],
                     root / schema.PATHS["cliffs"])
        schema.write("candidates", [dict(trace_id=t, token_index=i, candidate_id=k, candidate_rank=k, prob=p,
                                         is_cliff=True, is_cliff_token=k == 0)
                                    for t, i, _, _, probs in cliffs for k, p in enumerate(probs)],
                     root / schema.PATHS["candidates"])
    write_root(tmp_path, {"t1": (True, 10, 0.1), "t2": (False, 20, 0.2), "t3": (None, 10, 0.1)},
               [("t2", 0, "deterministic", True, [0.9, 0.05]), ("t2", 5, "uncertain", True, [0.4]),
                ("t3", 2, "sampled_off", False, [0.1, 0.1])])
    write_root(tmp_path / "study/b", {"t1": (False, 40, 0.5)}, [("t1", 3, "other", False, [0.3])])
    schema.write("study_cpm_shift", [], tmp_path / schema.PATHS["study_cpm_shift"])
    return [Member("a", Path("."), "x", "F", 1.0), Member("b", Path("study/b"), "y", "F", 0.5)]


def study_con(tmp_path: Path, study: list[Member]):
    con = duck.connect(tmp_path, ["study_cpm_shift"])
    duck.create_study_views(con, study, tmp_path)
    return con


def test_study_views_carry_the_model(tmp_path):
    con = study_con(tmp_path, seed_study(tmp_path))
    assert con.sql("select model, count(*) from study.cliffs group by model order by model").fetchall() == \
        [("a", 3), ("b", 1)]
    assert con.sql("select model, family, size_b from study.models order by model_order").fetchall() == \
        [("a", "F", 1.0), ("b", "F", 0.5)]


def test_study_occurrence_by_model_and_correctness(tmp_path):
    con = study_con(tmp_path, seed_study(tmp_path))
    rows = {(r["model"], r["correctness"]): r for r in duck.run_sql_file(
        con, "study_occurrence", {"include_empty_prefix": True}).to_pylist()}
    assert [k for k in rows] == [("b", "correct"), ("b", "failed"), ("b", "all"),     # family F, size 0.5 first
                                 ("a", "correct"), ("a", "failed"), ("a", "all")]
    a = rows[("a", "all")]
    assert (a["num_traces"], a["num_traces_with_cliff"], a["num_cliffs"]) == (3, 2, 3)   # the ungradable counts in all
    assert a["cliffs_per_1k_tokens"] == pytest.approx(1000 * 3 / 40) and a["expected_false_cliffs"] == pytest.approx(0.4)
    # false cliffs of `a`: one pair each at q = 0.1, 0.2, 0.1; P(<= 0) = 0.648 and P(<= 1) = 0.954, so the
    # 2.5% quantile is 0 and the 97.5% one 2: the excess 2.6 lies in [3 - 2, 3 - 0]
    assert (a["excess_cliffs"], a["excess_cliffs_lo"], a["excess_cliffs_hi"]) == pytest.approx((2.6, 1.0, 3.0))
    assert rows[("a", "failed")]["cliffs_per_trace"] == 2 and rows[("b", "correct")]["num_traces"] == 0
    assert rows[("b", "correct")]["share_with_cliff"] is None
    no_empty = {(r["model"], r["correctness"]): r for r in duck.run_sql_file(
        con, "study_occurrence", {"include_empty_prefix": False}).to_pylist()}
    assert no_empty[("a", "failed")]["num_cliffs"] == 1


def test_study_taxonomy_and_cpm_by_model(tmp_path):
    con = study_con(tmp_path, seed_study(tmp_path))
    tax = {r["model"]: r for r in duck.run_sql_file(con, "study_taxonomy", {"include_empty_prefix": True}).to_pylist()}
    assert tax["a"]["share_deterministic"] == pytest.approx(1 / 3) and tax["a"]["share_greedy"] == pytest.approx(2 / 3)
    assert tax["b"]["num_other"] == 1 and tax["b"]["share_uncertain"] is None           # 'other' is excluded
    cpm = {r["model"]: r for r in duck.run_sql_file(con, "study_cpm", {}).to_pylist()}
    assert cpm["a"]["cpm_deterministic"] == pytest.approx(0.95) and cpm["a"]["cpm_sampled_off"] == pytest.approx(0.2)
    assert cpm["a"]["cpm_mean"] == pytest.approx((0.95 + 0.4 + 0.2) / 3) and cpm["b"]["cpm_mean"] == pytest.approx(0.3)


def test_study_tables_on_zero_rows(tmp_path):
    """A study whose models have no traces yet: a zero row per model (and group), no ΔCPM rows."""
    for root in (tmp_path, tmp_path / "study/b"):
        for name in ("trace_cliffs", "cliffs", "candidates"):
            schema.write(name, [], root / schema.PATHS[name])
    schema.write("study_cpm_shift", [], tmp_path / schema.PATHS["study_cpm_shift"])
    con = study_con(tmp_path, [Member("a", Path("."), "x", "F", 1.0), Member("b", Path("study/b"), "y", "F", None)])
    occ = duck.run_sql_file(con, "study_occurrence", {"include_empty_prefix": True}).to_pylist()
    assert len(occ) == 6 and all(r["num_traces"] == 0 and r["cliffs_per_trace"] is None for r in occ)
    assert [r["model"] for r in duck.run_sql_file(con, "study_taxonomy", {"include_empty_prefix": True}).to_pylist()] \
        == ["a", "b"]                                                                    # unknown size last
    assert duck.run_sql_file(con, "study_cpm", {}).num_rows == 2
    assert duck.run_sql_file(con, "study_cpm_shift", {}).num_rows == 0


def shift(source, eval_model, i, category, cpm_source, cpm_eval):
    return {"source_model": source, "eval_model": eval_model, "trace_id": "t", "token_index": i, "category": category,
            "num_cliff_set": 1, "cpm_source": cpm_source, "cpm_eval": cpm_eval, "delta_cpm": cpm_eval - cpm_source,
            "rank_source": 1, "rank_eval": 2, "entropy_eval": 0.1, "is_greedy_eval": False}


SHIFT_SEED = [shift("a", "b", 1, "uncertain", 0.6, 0.2), shift("a", "b", 2, "uncertain", 0.4, 0.5),
              shift("b", "a", 1, "sampled_off", 0.3, 0.1)]
STUDY_SHIFT_BREAKS = {
    "unique_study_cpm_shift": lambda rows: rows.append(copy.deepcopy(rows[0])),
    "study_cpm_shift_range": lambda rows: rows[1].update(cpm_eval=1.3, delta_cpm=0.9),
}


def test_study_cpm_shift_table_by_direction_and_scale(tmp_path):
    study = seed_study(tmp_path)
    schema.write("study_cpm_shift", SHIFT_SEED, tmp_path / schema.PATHS["study_cpm_shift"])
    rows = {(r["direction"], r["category"]): r for r in duck.run_sql_file(study_con(tmp_path, study), "study_cpm_shift",
                                                                          {}).to_pylist()}
    assert list(rows) == [("a -> b", "uncertain"), ("a -> b", "all"), ("b -> a", "sampled_off"), ("b -> a", "all")]
    u = rows[("a -> b", "uncertain")]
    assert u["scale"] == "down" and rows[("b -> a", "all")]["scale"] == "up"            # a is 1.0B, b 0.5B
    assert u["delta_cpm_mean"] == pytest.approx(-0.15) and u["share_cpm_down"] == 0.5
    assert u["cpm_source_mean"] == pytest.approx(0.5) and u["cpm_eval_mean"] == pytest.approx(0.35)


def test_every_study_cpm_shift_check_has_a_breaking_seed(tmp_path):
    checks = {n for n, sql in duck.check_files().items() if "study_cpm_shift" in duck._referenced_datasets(sql)}
    assert checks == set(STUDY_SHIFT_BREAKS)
    schema.write("study_cpm_shift", SHIFT_SEED, tmp_path / schema.PATHS["study_cpm_shift"])
    assert duck.assert_checks(duck.connect(tmp_path, ["study_cpm_shift"])) == (dict.fromkeys(STUDY_SHIFT_BREAKS, 0)
                                                                               | {"finite_study_cpm_shift": 0})
    for check, breaks in STUDY_SHIFT_BREAKS.items():
        rows = copy.deepcopy(SHIFT_SEED)
        breaks(rows)
        schema.write("study_cpm_shift", rows, tmp_path / schema.PATHS["study_cpm_shift"])
        with pytest.raises(ValueError, match=check):
            duck.assert_checks(duck.connect(tmp_path, ["study_cpm_shift"]))


def test_cliffdata_sql_sees_the_study_views(tmp_path):
    study = seed_study(tmp_path)
    con = sandbox.connect_sandbox(tmp_path, members=study)
    cols, rows = sandbox.readonly_query(con, "select model, count(*) as n from study.cliffs group by all order by model")
    assert cols == ["model", "n"] and rows == [("a", 3), ("b", 1)]


# --- dvc repro of a study: adding a model re-runs only its own stages and the cross-model ones -------

@pytest.fixture
def tiny_b(tmp_path):
    """Model B: the tiny tokenizer (so A and B read each other's cliffs), other weights."""
    folder = tmp_path / "tiny-b"
    tok = build_tokenizer()
    model = build_model(len(tok), seed=1)
    model.generation_config.eos_token_id = 2
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def ran(out: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", out))


@pytest.mark.slow
def test_dvc_repro_of_a_study_adds_a_model_without_re_running_others(tiny_pipeline, tiny_b, tmp_path):
    """Adding B to the session fixture's run of A re-runs B's own stages and the cross-model ones, nothing of A's;
    a second repro has nothing to do. (A model with another tokenizer, refused both ways, is the scripted
    example's model C above.)"""
    from helpers import dvc

    proj = tmp_path / "proj"
    shutil.copytree(tiny_pipeline, proj, symlinks=True)
    params = yaml.safe_load((proj / "params.yaml").read_text())
    params["study"] = {"models": {"tiny-b": {"source": str(tiny_b), "family": "tiny", "size_b": 0.2}}}
    (proj / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    per_model = {"model", "sample", "token_stats", "rollouts", "cliffs", "replicate", "ablation", "candidates",
                 "entropy"}
    cross_model = {"study_cpm_shift", "study_tables", "report"}          # the explorer shows every model
    out = dvc(proj, "repro", MLFLOW_TRACKING_URI=None)
    assert ran(out) == {f"study_{s}@tiny-b" for s in per_model} | cross_model
    main_name = params["model"]["source"].rstrip("/").rsplit("/", 1)[-1]
    record = json.loads((proj / "metrics/study_cpm_shift.json").read_text())
    assert record["pairs"] == [f"{main_name} -> tiny-b", f"tiny-b -> {main_name}"] and record["refused"] == {}
    for path in ("study/tiny-b/data/cliffs/cliffs.parquet", "study/tiny-b/data/candidates/candidates.parquet",
                 "study/tiny-b/metrics/occurrence.json", "study/tiny-b/models/base/config.json"):
        assert (proj / path).exists(), path
    study = json.loads((proj / "metrics/study.json").read_text())
    assert study["models"] == [main_name, "tiny-b"] and set(study["occurrence"]) >= {"tiny-b/all", f"{main_name}/all"}
    report = json.loads((proj / "metrics/report.json").read_text())
    assert report["num_models"] == 2 and report["num_compare_pages"] >= 1
    assert "Running stage" not in dvc(proj, "repro", MLFLOW_TRACKING_URI=None)           # and nothing is left to do
