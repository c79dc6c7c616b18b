"""How hard are the embedded default's problems for the model? Per-problem success rates by family.

    python bench/difficulty.py --families word1=30 add2=30 --samples 16 [--json bench/results/difficulty.json]

Samples `--samples` traces per problem with the params' engine, prompts and trace sampling settings
(temperature etc. from `sample.sampling`, overridable), grades them with the project's grader and
reports, per family: mean accuracy, problems with a success rate in (0.1, 0.9) ("mixed"), all-wrong,
all-right, and median response length. The embedded default needs >= 40% mixed problems: a problem
the model always or never solves has no cliffs to find.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    from transformers import AutoTokenizer

    from cliffdata.backends import open_backend
    from cliffdata.config.load import load_params
    from cliffdata.config.problems import SourceConfig
    from cliffdata.generate.sampling import sample_traces
    from cliffdata.problems import generate_arith

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--families", nargs="+", default=["word1=30", "add2=30"], help="family=count")
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--seed", type=int, default=1, help="problem seed (default 1: not the pipeline's problems)")
    ap.add_argument("--temperature", type=float, default=None)
    ap.add_argument("--model", default=str(ROOT / "models/base"))
    ap.add_argument("--json", default=str(ROOT / "bench/results/difficulty.json"))
    args = ap.parse_args()

    params = load_params(ROOT / "params.yaml")
    arith = next(s for s in params.problems.sources if s.dataset == "arith")
    families = {f.split("=")[0]: int(f.split("=")[1]) for f in args.families}
    source = SourceConfig(dataset="arith", seed=args.seed, families=families, prompt=arith.prompt,
                          answer_format="hash", family_prompts={f: arith.family_prompts.get(f, arith.prompt)
                                                                for f in families})
    problems = generate_arith(source)
    sampling = params.sample.sampling
    if args.temperature is not None:
        sampling = dataclasses.replace(sampling, temperature=args.temperature)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    started = time.perf_counter()
    with open_backend(params.engine, args.model, seed=args.seed) as backend:
        traces = sample_traces(problems, params.prompts, tokenizer, backend, sampling, args.samples, args.seed)
    wall = time.perf_counter() - started

    family_of = {p["problem_id"]: p["family"] for p in problems}
    by_problem: dict[str, list] = defaultdict(list)
    lengths: dict[str, list] = defaultdict(list)
    for t in traces:
        by_problem[t["problem_id"]].append(t["is_correct"] is True)
        lengths[family_of[t["problem_id"]]].append(t["num_tokens"])
    report = {"engine": params.engine.backend, "samples": args.samples, "seed": args.seed,
              "temperature": sampling.temperature, "wall_seconds": round(wall, 1), "families": {}}
    for fam in sorted(families):
        rates = sorted(sum(v) / len(v) for pid, v in by_problem.items() if family_of[pid] == fam)
        report["families"][fam] = {
            "num_problems": len(rates), "mean_accuracy": round(statistics.mean(rates), 4),
            "num_mixed": sum(0.1 < r < 0.9 for r in rates), "share_mixed": round(sum(0.1 < r < 0.9 for r in rates) / len(rates), 4),
            "num_all_wrong": rates.count(0.0), "num_all_right": rates.count(1.0),
            "median_tokens": statistics.median(lengths[fam]), "rates": [round(r, 4) for r in rates],
        }
    all_rates = [sum(v) / len(v) for v in by_problem.values()]
    report["share_mixed_overall"] = round(sum(0.1 < r < 0.9 for r in all_rates) / len(all_rates), 4)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    print("| family | problems | mean acc | mixed (0.1<r<0.9) | all wrong | all right | median tokens |")
    print("|---|---|---|---|---|---|---|")
    for fam, r in report["families"].items():
        print(f"| {fam} | {r['num_problems']} | {r['mean_accuracy']:.2f} | {r['num_mixed']} ({r['share_mixed']:.0%}) "
              f"| {r['num_all_wrong']} | {r['num_all_right']} | {r['median_tokens']} |")
    print(f"overall mixed share: {report['share_mixed_overall']:.0%}; {len(traces)} traces in {wall:.0f} s")


if __name__ == "__main__":
    main()
