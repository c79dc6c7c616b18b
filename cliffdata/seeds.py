"""Seeds as an axis: the embedded run repeated under K seeds, each a DVC experiment, and the spread of
every headline figure between them (metrics/seeds.json, metrics/seeds.md).

    python -m cliffdata.seeds run training 0 1 2 3 4     # Cliff-DPO training seeds, the pairs fixed
    python -m cliffdata.seeds run chain 0 1 2             # every seeded stage from `sample` on
    python -m cliffdata.seeds collect                     # the saved experiments -> metrics/seeds.{json,md}

Two levels (`LEVELS`): `training` varies the seed of Cliff-DPO training only, so the same pairs train
again (minutes a seed: dpo_train and dpo_eval); `chain` varies the seed of every stage that draws
(sampling, rollouts, replication, ablation, candidates and the control, training), the whole chain.
Each seed runs as `dvc exp run --temp` (outside the workspace, which stays as it is) named
`seeds-<level>-<seed>` and is saved when it finishes, so a run stopped halfway keeps the seeds it
completed, and `run` skips a seed whose experiment exists. `collect` reads the experiments saved on
the commits that share the workspace's pipeline state (back to the last change of dvc.lock or
params.yaml), writes each seed's headline figures (metrics/headline.json) and the Cliff-DPO accuracy
differences the verdicts use, with their mean, SD and t-interval over seeds.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
from scipy import stats

# the params each level sets to the seed, and the stage a run reproduces up to (a training seed stops at
# dpo_eval: its other metrics, the summary's headline among them, are the baseline's and are not read)
LEVELS: dict[str, tuple[tuple[str, ...], str]] = {
    "training": (("dpo_train.seed",), "dpo_eval"),
    "chain": (("sample.seed", "rollouts.seed", "replicate.seed", "ablation.seed", "candidates.seed",
               "dpo_train.seed"), "summary"),
}
READS_HEADLINE = {"training": False, "chain": True}
# Cliff-DPO accuracy differences (variant, reference) the verdicts decide over seeds
DIFFERENCES = (("uncertain_sampled_off", "base"), ("uncertain_sampled_off", "deterministic"), ("all", "random"))
PREFIX = "seeds"
# the dvc beside this interpreter (the project's environment), else the one on PATH
DVC = str(Path(sys.executable).with_name("dvc")) if Path(sys.executable).with_name("dvc").exists() else "dvc"


def experiment_name(level: str, seed: int) -> str:
    return f"{PREFIX}-{level}-{seed}"


def run(level: str, seeds: list[int], dvc: str = DVC) -> list[str]:
    """Run each seed of `level` whose experiment does not exist yet, one after another; the names run."""
    keys, target = LEVELS[level]
    done = set(saved_names(dvc))
    ran = []
    for seed in seeds:
        name = experiment_name(level, seed)
        if name in done:
            print(f"{name}: saved already, skipped", flush=True)
            continue
        cmd = [dvc, "exp", "run", "--temp", "-n", name, *[f"-S{k}={seed}" for k in keys], target]
        print(" ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)
        ran.append(name)
    return ran


def saved_names(dvc: str = DVC) -> list[str]:
    return [e["name"] for e in experiments(dvc) if e["name"]]


COMMITS = 50                           # how far back from HEAD `collect` looks for saved seeds


def experiments(dvc: str = DVC) -> list[dict]:
    """The experiments saved on the last COMMITS commits, newest first: name, baseline commit, params
    (flat, and `params_data` as in params.yaml) and metrics (by file)."""
    out = subprocess.run([dvc, "exp", "show", "--json", "--no-pager", "-n", str(COMMITS)], check=True,
                         capture_output=True, text=True)
    return list(flatten_show(json.loads(out.stdout)))


def flatten_show(doc: list[dict]):
    """`dvc exp show --json` (a list of commits, each with its experiments) as flat records: the finished
    experiments only (not running or queued, no error)."""
    for commit in doc:
        for exp in commit.get("experiments") or []:
            if exp.get("executor"):              # running or queued: its metrics are not its own yet
                continue
            for rev in exp.get("revs") or []:
                if rev.get("error"):
                    continue
                data = rev.get("data") or {}
                params, params_data = {}, ((data.get("params") or {}).get("params.yaml") or {}).get("data") or {}
                for content in (data.get("params") or {}).values():
                    params.update(_flat(content.get("data") or {}))
                metrics = {path: content.get("data") or {} for path, content in (data.get("metrics") or {}).items()}
                yield {"name": rev.get("name") or exp.get("name"), "rev": rev.get("rev"),
                       "baseline": commit.get("rev"), "params": params, "params_data": params_data,
                       "metrics": metrics}


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, key + "."))
        else:
            out[key] = v
    return out


def seed_rows(records: list[dict], params_fingerprint: str | None = None) -> dict[str, list[dict]]:
    """Per level, one row per saved seed: its headline figures and Cliff-DPO differences, by seed. With
    `params_fingerprint`, only the experiments run with those params (but for their seeds) count; of
    several with one name, the first (the newest commit's)."""
    out: dict[str, list[dict]] = {level: [] for level in LEVELS}
    seen: set[str] = set()
    for r in records:
        name = r["name"] or ""
        parts = name.split("-")
        if len(parts) != 3 or parts[0] != PREFIX or parts[1] not in LEVELS or not parts[2].isdigit() or name in seen:
            continue
        if params_fingerprint is not None and fingerprint(r.get("params_data") or {}) != params_fingerprint:
            continue
        seen.add(name)
        headline = ((r["metrics"].get("metrics/headline.json") or {}).get("headline") or {}
                    if READS_HEADLINE[parts[1]] else {})
        models = (r["metrics"].get("metrics/dpo_eval.json") or {}).get("models") or {}
        accuracy = {m: v.get("accuracy") for m, v in models.items() if isinstance(v, dict)}
        row = {"seed": int(parts[2]), "baseline": (r.get("baseline") or "")[:7], "accuracy": accuracy,
               **{f"{a}-{b}": accuracy[a] - accuracy[b] for a, b in DIFFERENCES
                  if accuracy.get(a) is not None and accuracy.get(b) is not None},
               **{k: v for k, v in headline.items() if isinstance(v, (int, float))}}
        out[parts[1]].append(row)
    return {level: sorted(rows, key=lambda x: x["seed"]) for level, rows in out.items()}


def spread(values: list[float], alpha: float) -> dict:
    """Mean, SD and the t-interval of the mean over seeds (null where fewer than two)."""
    x = np.asarray(values, dtype=float)
    if len(x) == 0:
        return {"n": 0, "mean": None, "sd": None, "ci_low": None, "ci_high": None}
    if len(x) == 1:
        return {"n": 1, "mean": float(x[0]), "sd": None, "ci_low": None, "ci_high": None}
    sd = float(x.std(ddof=1))
    half = float(stats.t.ppf(1 - alpha / 2, len(x) - 1)) * sd / math.sqrt(len(x))
    return {"n": len(x), "mean": float(x.mean()), "sd": sd, "ci_low": float(x.mean()) - half,
            "ci_high": float(x.mean()) + half}


def summarize(rows: dict[str, list[dict]], alpha: float) -> dict:
    """metrics/seeds.json: per level, the per-seed rows and every figure's spread over seeds."""
    out = {}
    for level, seeds in rows.items():
        figures = sorted({k for r in seeds for k, v in r.items() if k not in ("seed", "accuracy", "baseline")
                          and isinstance(v, (int, float))})
        out[level] = {"seeds": seeds,
                      "spread": {f: _rounded(spread([r[f] for r in seeds if r.get(f) is not None], alpha))
                                 for f in figures}}
    return out


# params sections no run the seeds summarize reads: the study's other models, and the risk stages (their
# metrics are not the summary's)
UNFINGERPRINTED = ("study", "risk_labels", "risk")
# params within a section that change no figure the seeds record: the matched control's arms draw their own
# positions and seeds, and leave every other arm of the ablation as it is
UNFINGERPRINTED_KEYS = ("ablation.matched_control", "ablation.control_pool")


def fingerprint(params_data: dict) -> str:
    """A digest of params.yaml without the seeds the levels set, the sections in UNFINGERPRINTED (the other
    models, the risk stages: neither changes this model's runs) and the keys in UNFINGERPRINTED_KEYS: the
    seeds of one configuration
    share it, and the summary reads saved seeds only where it matches its own params."""
    data = json.loads(json.dumps({k: v for k, v in params_data.items() if k not in UNFINGERPRINTED}))
    for keys in [keys for keys, _ in LEVELS.values()] + [UNFINGERPRINTED_KEYS]:
        for key in keys:
            *parents, last = key.split(".")
            node = data
            for part in parents:
                node = node.get(part, {}) if isinstance(node, dict) else {}
            if isinstance(node, dict):
                node.pop(last, None)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def _rounded(d: dict) -> dict:
    return {k: round(v, 6) if isinstance(v, float) else v for k, v in d.items()}


def _g(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4g}"


def markdown(summary: dict) -> str:
    lines = ["# Seeds", "",
             "Each figure's mean, between-seed SD and t-interval of the mean over the saved seeds "
             "(`make seeds`; docs/method.md, Seeds).", ""]
    for level, cell in ((k, v) for k, v in summary.items() if k in LEVELS):
        lines += [f"## {level}: {len(cell['seeds'])} seeds ({', '.join(str(r['seed']) for r in cell['seeds']) or 'none'})",
                  "", "| figure | n | mean | SD | 95% interval |", "|---|---|---|---|---|"]
        for figure, s in cell["spread"].items():
            interval = "n/a" if s["ci_low"] is None else f"[{_g(s['ci_low'])}, {_g(s['ci_high'])}]"
            lines.append(f"| {figure} | {s['n']} | {_g(s['mean'])} | {_g(s['sd'])} | {interval} |")
        lines.append("")
    return "\n".join(lines)


def collect(folder: Path, alpha: float, params_data: dict, dvc: str = DVC) -> dict:
    """metrics/seeds.{json,md} from the saved experiments, stamped with the params' fingerprint."""
    own = fingerprint(params_data)
    summary = {"params_fingerprint": own, **summarize(seed_rows(experiments(dvc), own), alpha)}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "seeds.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    (folder / "seeds.md").write_text(markdown(summary))
    return summary


def main(argv: list[str] | None = None) -> None:
    from cliffdata.config.load import load_params, read_yaml

    parser = argparse.ArgumentParser(prog="python -m cliffdata.seeds", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run the seeds of a level not saved yet, each a DVC experiment")
    r.add_argument("level", choices=sorted(LEVELS))
    r.add_argument("seeds", type=int, nargs="+")
    sub.add_parser("collect", help="the saved seeds -> metrics/seeds.json and metrics/seeds.md")
    args = parser.parse_args(argv)
    if args.command == "run":
        run(args.level, args.seeds)
    else:
        params = load_params()
        if params.verdicts is None:
            sys.exit("params.yaml: `verdicts` (alpha) is needed to summarise the seeds")
        collect(Path("metrics"), params.verdicts.alpha, read_yaml("params.yaml"))


if __name__ == "__main__":
    main()
