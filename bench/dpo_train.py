"""How long does training every Cliff-DPO adapter take, one process per variant (a `dpo_train@<variant>`
foreach stage) against one process for all (the `dpo_train` stage)? The pipeline's own
params.yaml (`dpo_train`) and data/dpo_pairs, three arms one after the other, each from a fresh
interpreter so that its imports count:

    python bench/dpo_train.py --json bench/results/dpo_train.json

  per_process  one process per variant, each trains its adapter (a stage per variant)
  one_process  one process, variants with the same pairs trained once (workers 1)
  workers      the stage's setting: one process, same-pairs variants once, `dpo_train.workers` side by side

MLflow is left out of every arm (the stage logs the same runs either way; a stage per variant imports mlflow
seven times). Reports each arm's wall seconds (from its process start to its last adapter saved), the
training seconds per variant, and whether every arm's adapter of every variant has the same bytes.
"""
import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.chdir(ROOT)


def run_arm(args) -> None:
    """In a fresh interpreter: train into args.out, print {variant: train seconds} as JSON."""
    from cliffdata.config.load import load_params
    from cliffdata.dpo.train import read_pairs, train_all

    cfg = load_params().dpo_train
    variants = [args.one] if args.one else list(cfg.variants)
    pairs, source = read_pairs(variants)
    results = train_all(pairs, source, cfg, args.workers, Path(args.out))
    print(json.dumps({v: round(r["seconds"], 1) for v, r in results.items()}))


def timed(cmd: list[str]) -> tuple[float, dict]:
    started = time.perf_counter()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return time.perf_counter() - started, json.loads(out.strip().splitlines()[-1])


def digest(folder: Path) -> str:
    return hashlib.md5((folder / "adapter_model.safetensors").read_bytes()).hexdigest()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", default=str(ROOT / "bench/results/dpo_train.json"))
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--workers", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.out:
        return run_arm(args)

    from cliffdata.config.load import load_params

    cfg = load_params().dpo_train
    me = [sys.executable, __file__]
    report = {"variants": list(cfg.variants), "workers": cfg.workers, "threads": cfg.threads, "arms": {}}
    digests = {}
    with tempfile.TemporaryDirectory() as tmp:
        arms = {"per_process": [me + ["--one", v, "--out", f"{tmp}/per_process"] for v in cfg.variants],
                "one_process": [me + ["--workers", "1", "--out", f"{tmp}/one_process"]],
                "workers": [me + ["--workers", str(cfg.workers), "--out", f"{tmp}/workers"]]}
        for arm, cmds in arms.items():
            seconds, train = 0.0, {}
            for cmd in cmds:
                s, t = timed(cmd)
                seconds += s
                train.update(t)
            digests[arm] = {v: digest(Path(tmp) / arm / f"{v}.tmp") for v in cfg.variants}
            report["arms"][arm] = {"seconds": round(seconds, 1), "train_seconds": train,
                                   "num_trainings": len(train)}
            print(arm, report["arms"][arm], flush=True)
    report["adapters_equal"] = all(digests[a] == digests["per_process"] for a in digests)
    report["speedup_vs_per_process"] = {a: round(report["arms"]["per_process"]["seconds"] / r["seconds"], 2)
                                        for a, r in report["arms"].items()}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
