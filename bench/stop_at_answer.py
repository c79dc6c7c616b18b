"""Stop rollouts at the end of the answer: tokens, time and grades with and without, one run.

    python bench/stop_at_answer.py [--positions 3] [--n 8] [--record tests/data/recorded_rollouts.jsonl]

The pipeline's traces, model, engine and `rollouts.sampling` (params.yaml). Prefixes: a few positions per
trace (start, a third, two thirds of the response). Arms, side by side: `never` (generate to EOS) and
`exact` (`rollouts.stop_at_answer: exact`), each with its own seeds; the share of correct rollouts per
arm (their difference is sampling noise: the stop is exact), generated tokens, engine wall time.
With --record it also writes the `never` arm's rollouts (prefix + continuation text, gold, format) and,
for boxed-format grading, the same number of rollouts sampled under the boxed prompt: the fixtures of
tests/test_stop_at_answer.py (graded with and without the cut, the grades must agree).
Writes bench/results/stop_at_answer.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from transformers import AutoTokenizer  # noqa: E402

from cliffdata import schema  # noqa: E402
from cliffdata.backends import GenerationRequest, open_backend, request_seed  # noqa: E402
from cliffdata.config.load import load_params  # noqa: E402
from cliffdata.generate.sampling import golds_by_problem, resample  # noqa: E402
from cliffdata.grading import answer_end, grade  # noqa: E402
from cliffdata.prompts import encode_prompt  # noqa: E402

PARAMS = load_params(ROOT / "params.yaml")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--positions", type=int, default=3)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--record", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=ROOT / "bench/results/stop_at_answer.json")
    args = ap.parse_args(argv)
    traces = schema.read("traces", ROOT / schema.PATHS["traces"]).to_pylist()
    problems = schema.read("problems", ROOT / schema.PATHS["problems"]).to_pylist()
    golds = golds_by_problem(problems)
    tokenizer = AutoTokenizer.from_pretrained(ROOT / "models/base")
    sampling = PARAMS.rollouts.sampling
    items = [(t, round(j * (len(t["response_ids"]) - 1) / args.positions)) for t in traces for j in range(args.positions)]
    prefixes = [(t["prompt_ids"], t["response_ids"][:i + 1]) for t, i in items]
    gold = [golds[t["problem_id"]].answer for t, _ in items]
    fmt = [golds[t["problem_id"]].answer_format for t, _ in items]
    report = {"num_prefixes": len(items), "n": args.n, "sampling": sampling.__dict__, "arms": {}}
    with open_backend(PARAMS.engine, str(ROOT / "models/base"), seed=0) as backend:
        for arm, seed in (("never", 1), ("exact", 2)):
            seeds = [request_seed(seed, t["trace_id"], i) for t, i in items]
            started = time.perf_counter()
            out = resample(backend, tokenizer, prefixes, args.n, sampling, seeds, gold, fmt, arm)
            report["arms"][arm] = {"wall_seconds": round(time.perf_counter() - started, 1),
                                   "generated_tokens": sum(r.num_generated_tokens for r in out),
                                   "share_correct": sum(r.num_correct for r in out) / (args.n * len(items))}
        if args.record:
            records = []
            requests = [GenerationRequest(tuple(p) + tuple(x), n=args.n, seed=request_seed(3, j)) for j, (p, x) in enumerate(prefixes)]
            for (p, x), g, f, gen in zip(prefixes, gold, fmt, backend.generate(requests, sampling)):
                records += [{"text": tokenizer.decode(list(x) + list(c), skip_special_tokens=True), "gold": g, "format": f}
                            for c in gen.token_ids]
            boxed = PARAMS.prompts["zeroshot_boxed"]
            by_id = {p["problem_id"]: p for p in problems}
            requests = [GenerationRequest(tuple(encode_prompt(tokenizer, boxed, by_id[t["problem_id"]]["question"])),
                                          n=args.n, seed=request_seed(4, t["trace_id"])) for t in traces]
            for t, gen in zip(traces, backend.generate(requests, sampling)):
                records += [{"text": tokenizer.decode(list(c), skip_special_tokens=True),
                             "gold": golds[t["problem_id"]].answer, "format": "boxed"} for c in gen.token_ids]
            args.record.parent.mkdir(parents=True, exist_ok=True)
            args.record.write_text("".join(json.dumps(r) + "\n" for r in records))
            report["recorded"] = {"path": str(args.record), "rollouts": len(records)}
            for f in ("hash", "boxed"):
                rows = [r for r in records if r["format"] == f]
                cut = [(r, answer_end(r["text"], f, first_box=True)) for r in rows]
                changed = sum(grade(r["text"], r["gold"], f) != grade(r["text"][:e], r["gold"], f) for r, e in cut if e)
                report["recorded"][f] = {"rollouts": len(rows), "with_answer_end": sum(e is not None for _, e in cut),
                                         "chars_after_end": sum(len(r["text"]) - e for r, e in cut if e),
                                         "grade_changed_by_cut": changed}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1) + "\n")
    a, b = report["arms"]["never"], report["arms"]["exact"]
    md = (f"# Stop at the answer ({len(items)} prefixes x {args.n} rollouts, {PARAMS.engine.backend})\n\n"
          "| arm | generated tokens | wall s | share correct |\n|---|---|---|---|\n"
          + "".join(f"| {k} | {v['generated_tokens']:,} | {v['wall_seconds']} | {v['share_correct']:.3f} |\n"
                    for k, v in report["arms"].items())
          + f"\ntokens saved: {a['generated_tokens'] - b['generated_tokens']:,} "
            f"({1 - b['generated_tokens'] / max(a['generated_tokens'], 1):.1%})\n")
    if "recorded" in report:
        md += "\nRecorded: " + json.dumps(report["recorded"]) + "\n"
    args.json.with_suffix(".md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
