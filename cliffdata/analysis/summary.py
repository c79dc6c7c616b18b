"""metrics/summary.md: this run's headline numbers beside the paper's reference numbers (protocol §8).

    text = render_summary(load_metrics(Path("metrics")), model="SmolLM2-135M-Instruct", datasets="arith")

Every number comes from a metrics file written by a stage (missing files give "n/a"); the paper's
numbers are constants from protocol §8, for comparison only: a different model, dataset and N.
"""
from __future__ import annotations

import json
from pathlib import Path

# protocol §8 (Ko, Kang, Lee 2026): seven models on GSM1K-100, MATH500-100, AIME25, N = 64
PAPER = {
    "share_with_cliff": "Qwen3-8B 9.4% / 32.0%, Qwen3-0.6B 16.2% / 32.1%, Llama-3.1-8B 27.6% / 38.6% (correct / failed)",
    "del_pass_at_n": "1.00 (every model)",
    "keep_pass_at_n": "0.70-0.95",
    "cpm": {"deterministic": "~1.00", "uncertain": "0.63-0.71", "sampled_off": "0.20-0.37"},
    "dpo": "up to +6.6 accuracy points; uncertain + sampled-off training helps, deterministic-only does not",
}
METRICS = ("occurrence", "taxonomy", "replicate", "directions", "ablation", "cpm", "dpo_pairs", "dpo_eval", "cliff_count",
           "cpm_shift", "rollouts", "sample")


def load_metrics(folder: Path) -> dict[str, dict]:
    """The stages' metrics JSON files that exist, by stem."""
    out = {}
    for name in METRICS:
        path = folder / f"{name}.json"
        if path.exists():
            out[name] = json.loads(path.read_text())
    return out


def _get(d: dict | None, *keys):
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _num(x, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _signed(x) -> str:
    return "n/a" if x is None else f"{100 * x:+.1f}"


def _last_pass(cell: dict | None) -> tuple[str, float | None]:
    """(k, pass@k) for the largest k of an ablation cell."""
    if not cell:
        return "N", None
    ks = sorted((int(k.split("@")[1]) for k in cell if k.startswith("pass@")))
    return str(ks[-1]), cell[f"pass@{ks[-1]}"]


def render_summary(m: dict[str, dict], model: str, datasets: str, verdicts: dict | None = None,
                   seeds: dict | None = None) -> str:
    """The summary page; `verdicts` (claims.records) gives every direction's verdict, else they read n/a;
    `seeds` (metrics/seeds.json) the spread of the Cliff-DPO figures between seeds."""
    verdicts = verdicts or {"main": [], "cliff_sets": {}}
    lines = [f"# Summary: {model} on {datasets}", "",
             "This run's numbers beside the paper's (protocol §8). **Different model, dataset and N**: the paper",
             "ran 0.6B-8B models on GSM1K/MATH500/AIME25 with N = 64; compare directions, not values.", ""]
    lines += size_note(verdicts["main"]) + verdict_table(verdicts["main"])
    occ = m.get("occurrence", {})
    lines += ["## Occurrence (RQ1)", "", "| | this run | paper |", "|---|---|---|",
              f"| traces with >= 1 cliff, correct / failed | {_pct(_get(occ, 'correct', 'share_with_cliff'))} / "
              f"{_pct(_get(occ, 'failed', 'share_with_cliff'))} | {PAPER['share_with_cliff']} |",
              f"| cliffs per trace / per 1k tokens | {_num(_get(occ, 'all', 'cliffs_per_trace'))} / "
              f"{_num(_get(occ, 'all', 'cliffs_per_1k_tokens'), 1)} | |",
              f"| traces (correct / failed) | {_get(occ, 'correct', 'num_traces')} / {_get(occ, 'failed', 'num_traces')} | 1,610 |",
              ""]
    abl = _get(m.get("ablation"), "all", "failed") or {}
    k_del, p_del = _last_pass(abl.get("del"))
    k_keep, p_keep = _last_pass(abl.get("keep"))
    p1_del, p1_keep = _get(abl, "del", "pass@1"), _get(abl, "keep", "pass@1")
    lines += ["## Deletion ablation on failed traces (RQ1)", "", "| | this run | paper |", "|---|---|---|",
              f"| Cliff-del pass@1 / pass@{k_del} | {_num(p1_del)} / {_num(p_del)} | pass@64 {PAPER['del_pass_at_n']} |",
              f"| Cliff-keep pass@1 / pass@{k_keep} | {_num(p1_keep)} / {_num(p_keep)} | pass@64 {PAPER['keep_pass_at_n']} |",
              f"| Critical-del / Random-del pass@{k_del} | {_num(_last_pass(abl.get('critical_del'))[1])} / "
              f"{_num(_last_pass(abl.get('random_del'))[1])} | |",
              f"| cliff instances | {_get(abl, 'del', 'num_instances')} | |",
              *resilience_rows(_get(m.get("ablation"), "resilience", "failed")),
              *matched_rows(abl, _get(m.get("ablation"), "matched_control")),
              "", f"Direction del > keep (pass@1, problems as units): **{_verdict(verdicts['main'], 'Cliff-del')}**.", ""]
    cpm = m.get("cpm", {})
    means = {c: _get(cpm, c, "cpm_mean") for c in ("deterministic", "uncertain", "sampled_off")}
    lines += ["## Cliff probability mass by category (RQ2/3)", "",
              "| category | cliffs | CPM mean (this run) | over alternatives (no cliff token) | paper |",
              "|---|---|---|---|---|"]
    for c, v in means.items():
        lines.append(f"| {c} | {_get(cpm, c, 'num_cliffs') or 0} | {_num(v)} | "
                     f"{_num(_get(cpm, c, 'cpm_alternatives_mean'))} | {PAPER['cpm'][c]} |")
    lines += ["", f"Directions, on the CPM over alternatives: deterministic > uncertain: **{_verdict(verdicts['main'], 'CPM over alternatives: deterministic')}**; "
                  f"uncertain > sampled-off: **{_verdict(verdicts['main'], 'CPM over alternatives: uncertain')}**.", ""]
    shift = _get(m.get("cpm_shift"), "directions") or {}
    if shift:
        lines += ["## CPM shift (RQ3)", "", "| direction | category | cliffs | CPM source | CPM eval | ΔCPM | rank shift |",
                  "|---|---|---|---|---|---|---|"]
        for direction, cats in shift.items():
            for c in ("deterministic", "uncertain", "sampled_off", "all"):
                cell = cats.get(c)
                if cell:
                    lines.append(f"| {direction} | {c} | {cell['num_cliffs']} | {_num(cell['cpm_source_mean'])} | "
                                 f"{_num(cell['cpm_eval_mean'])} | {_num(cell['delta_cpm_mean'])} | "
                                 f"{_num(cell['rank_shift_mean'], 2)} |")
        lines.append("")
    pairs = _get(m.get("dpo_pairs"), "variants") or {}
    ev = _get(m.get("dpo_eval"), "models") or {}
    if pairs or ev:
        lines += ["## Cliff-DPO (protocol §6)", "",
                  "| variant | train pairs | accuracy | Δ to base (points) | 95% interval |", "|---|---|---|---|---|",
                  f"| base | | {_pct(_get(ev, 'base', 'accuracy'))} | | |"]
        for v, cell in pairs.items():
            e = ev.get(v, {})
            interval = ("" if "diff_ci_low" not in e else f"[{_signed(e['diff_ci_low'])}, {_signed(e['diff_ci_high'])}]")
            acc = _pct(e.get("accuracy")) if e else "= base (no training pairs)"
            lines.append(f"| {v} | {cell['num_train']} | {acc} | {_signed(e.get('diff_to_base'))} | {interval} |")
        lines += ["", f"Paper: {PAPER['dpo']}. Here uncertain + sampled-off beats the base model: "
                      f"**{_verdict(verdicts['main'], 'Cliff-DPO uncertain + sampled-off > base')}**; beats "
                      f"deterministic-only: **{_verdict(verdicts['main'], 'Cliff-DPO uncertain + sampled-off > det')}** "
                      f"(decided over training seeds; the intervals above are one seed's, over eval problems).", ""]
        cliffs_cell, control = ev.get("all", {}), ev.get("random", {}).get("accuracy")
        if control is not None and cliffs_cell.get("accuracy") is not None:
            diff = cliffs_cell.get("diff_to_control")
            interval = ("" if diff is None else f" ({_signed(diff)} points, paired 95% interval "
                        f"[{_signed(cliffs_cell['control_ci_low'])}, {_signed(cliffs_cell['control_ci_high'])}])")
            lines += [f"Control (`random`: as many pairs at random non-cliff positions of the same traces): pairs at "
                      f"cliffs {_pct(cliffs_cell['accuracy'])} vs random positions {_pct(control)}{interval}; cliffs help "
                      f"more than single-token DPO anywhere: **{_verdict(verdicts['main'], 'Cliff-DPO at cliffs')}** "
                      f"(decided over training seeds).", ""]
    lines += seed_lines(seeds or {})
    lines += noise_audit(m, verdicts["cliff_sets"])
    cc = _get(m.get("cliff_count"), "models") or {}
    if cc:
        lines += ["## Cliff count before / after Cliff-DPO", "",
                  "| model | traces | cliffs / trace | per 1k tokens | uncertain / trace | sampled-off / trace | deterministic / trace |",
                  "|---|---|---|---|---|---|---|"]
        for name, c in cc.items():
            lines.append(f"| {name} | {c['num_traces']} | {_num(c['cliffs_per_trace'])} | {_num(c['cliffs_per_1k_tokens'], 1)} | "
                         f"{_num(c['uncertain_per_trace'])} | {_num(c['sampled_off_per_trace'])} | "
                         f"{_num(c['deterministic_per_trace'])} |")
        lines.append("")
    return "\n".join(lines)


def headline(m: dict[str, dict]) -> dict:
    """metrics/headline.json: the dozen numbers experiments compare (`make exps`), under one key so that
    `dvc exp show --keep '^headline\\.'` picks them out of the stages' hundreds of metrics."""
    occ, rep, ev = m.get("occurrence") or {}, m.get("replicate") or {}, _get(m.get("dpo_eval"), "models") or {}
    abl = _get(m.get("ablation"), "all", "failed") or {}
    cpm = m.get("cpm") or {}

    def r(x):
        return None if x is None else round(float(x), 4)

    values = {
        "traces": _get(occ, "all", "num_traces"), "share_with_cliff_failed": r(_get(occ, "failed", "share_with_cliff")),
        "share_with_cliff_correct": r(_get(occ, "correct", "share_with_cliff")),
        "cliffs": _get(occ, "all", "num_cliffs"), "expected_false_cliffs": r(_get(occ, "all", "expected_false_cliffs")),
        "replication_rate": r(_get(rep, "all", "rate")),
        "del_pass_at_1": r(_get(abl, "del", "pass@1")), "keep_pass_at_1": r(_get(abl, "keep", "pass@1")),
        "cpm_uncertain": r(_get(cpm, "uncertain", "cpm_mean")), "cpm_sampled_off": r(_get(cpm, "sampled_off", "cpm_mean")),
        "dpo_base": r(_get(ev, "base", "accuracy")), "dpo_all": r(_get(ev, "all", "accuracy")),
        "dpo_random": r(_get(ev, "random", "accuracy")),
        "rollout_tokens": _get(m.get("rollouts"), "num_generated_tokens"),
    }
    return {"headline": values}


def _rate(cell: dict | None) -> str:
    if not cell:
        return "n/a"
    return (f"{cell['num_replicated']}/{cell['num_cliffs']} = {_pct(cell['rate'])} "
            f"[{_pct(cell['rate_lo'])}, {_pct(cell['rate_hi'])}]")


def noise_audit(m: dict[str, dict], cliff_sets: dict[str, list[dict]] | None = None) -> list[str]:
    """The noise audit section: observed vs expected cliffs, feasibility by category, replication, and the
    directions on all / feasible / replicated cliffs (`cliff_sets`: their verdicts, claims.records)."""
    cliff_sets = cliff_sets or {}
    occ, tax, rep, dirs = (m.get(k) or {} for k in ("occurrence", "taxonomy", "replicate", "directions"))
    if "expected_false_cliffs" not in occ.get("all", {}) and not rep:
        return []
    lines = ["## Noise audit: cliffs you can trust", "",
             "Expected by noise: the sum over tested pairs of the probability that the test fires when both sides",
             "share one true potential, given the pair's total (unbiased for every potential); the excess interval",
             "takes the exact 2.5% and 97.5% quantiles of that false-cliff count (a Poisson-binomial), clipped to",
             "[0, observed]. A cliff is *feasible* when its token's sampler probability leaves room for a drop",
             "the test can detect (1 − π_s ≥ δ_min(N)); *replicated* when the test passes again on fresh rollouts",
             "on both sides (a true drop near the detectable size replicates about half the time: a cliff that",
             "does not replicate is not shown to be false).", "",
             "| traces | tested pairs | cliffs | expected by noise | excess [95%] | cliffs feasible | pairs feasible |",
             "|---|---|---|---|---|---|---|"]
    for group in ("correct", "failed", "all"):
        c = occ.get(group)
        if not c or not c.get("num_traces") or "expected_false_cliffs" not in c:
            continue
        lines.append(f"| {group} | {c.get('num_tested_pairs')} | {c['num_cliffs']} | {_num(c.get('expected_false_cliffs'), 2)} | "
                     f"{_num(c.get('excess_cliffs'), 2)} [{_num(c.get('excess_cliffs_lo'), 2)}, "
                     f"{_num(c.get('excess_cliffs_hi'), 2)}] | {_pct(c.get('share_cliffs_feasible'))} | "
                     f"{_pct(c.get('share_pairs_feasible'))} |")
    lines += ["", "| category | cliffs | feasible | replicated [95% Wilson] |", "|---|---|---|---|"]
    for cat in ("deterministic", "uncertain", "sampled_off", "other"):
        t = tax.get(cat) or {}
        lines.append(f"| {cat} | {t.get('num_cliffs', 0)} | {_pct(t.get('feasible_share'))} | {_rate(rep.get(f'category={cat}'))} |")
    lines += ["", "| replication by | rate [95% Wilson] |", "|---|---|"]
    for key in ("all", "feasible=true", "feasible=false", "correctness=correct", "correctness=failed"):
        if key in rep:
            lines.append(f"| {key} | {_rate(rep[key])} |")
    if "all" in rep:
        lines.append(f"| cost | {rep['all']['num_rollouts']} rollouts, {rep['all']['num_generated_tokens']} generated tokens |")
    if dirs:
        lines += ["", "Directions re-checked on each cliff set (failed traces for RQ1):", "",
                  "| cliff set | cliffs | del / keep pass@1 | del / keep pass@N | RQ1 del > keep | "
                  "CPM det / unc / s-off (n) | det > unc; unc > s-off |", "|---|---|---|---|---|---|---|"]
        for name in ("all", "feasible", "replicated"):
            d = dirs.get(name)
            if not d:
                continue
            verdicts = cliff_sets.get(name, [])
            cpm = [d["cpm_deterministic"], d["cpm_uncertain"], d["cpm_sampled_off"]]
            lines.append(
                f"| {name} | {d['num_cliffs']} | {_num(d['del_pass_at_1'])} / {_num(d['keep_pass_at_1'])} | "
                f"{_num(d['del_pass_at_n'])} / {_num(d['keep_pass_at_n'])} | {_verdict(verdicts, 'Cliff-del')} | "
                f"{' / '.join(_num(v) for v in cpm)} ({d['num_deterministic']}/{d['num_uncertain']}/{d['num_sampled_off']}) | "
                f"{_verdict(verdicts, 'CPM over alternatives: deterministic')}; {_verdict(verdicts, 'CPM over alternatives: uncertain')} |")
    lines.append("")
    return lines


def _verdict(verdicts: list[dict], claim_prefix: str) -> str:
    """The verdict of the first claim starting with `claim_prefix` ("n/a" where there is none)."""
    return next((v["verdict"] for v in verdicts if v["claim"].startswith(claim_prefix)), "n/a")


def _interval(v: dict) -> str:
    if v["interval"] is None:
        return ""
    lo, hi = v["interval"]
    if v["test"].startswith("Fisher"):
        return f"OR [{lo:.2f}, {hi:.2f}]"
    return f"[{lo:+.3f}, {hi:+.3f}]"


def _units(v: dict) -> str:
    n = v["n"]
    return ", ".join(f"{k.replace('_', ' ')} {n[k]}" for k in ("cliffs", "traces", "problems", "failed", "correct",
                                                               "eval_problems", "seeds") if k in n)


def verdict_table(verdicts: list[dict]) -> list[str]:
    """The verdicts section: every direction with its verdict, estimate, interval, exact p, counts and the
    units its test would need for the configured power at the paper's effect."""
    if not verdicts:
        return []
    lines = ["## Verdicts", "",
             "Each direction is decided by one exact test on the unit named (docs/method.md, Verdicts): "
             "**supported** or **contradicted** where p < alpha in that direction, else **undecided**; "
             "**n/a** where the data cannot test it.", "",
             "| direction | verdict | estimate | interval | p | test, unit | n | units needed (effect) |",
             "|---|---|---|---|---|---|---|---|"]
    for v in verdicts:
        if v["verdict"] == "n/a":
            lines.append(f"| {v['claim']} | n/a | | | | | {_units(v)} | {v['reason']} |")
            continue
        needed = "n/a" if v["n_needed"] is None else f"{v['n_needed']} {v['unit']}s"
        needed += f" ({v['effect_source']})" if v["effect_source"] else ""
        estimate = "n/a" if v["estimate"] is None else f"{v['estimate']:+.3f}"
        p = "" if v["p"] is None else f"{v['p']:.3g}"
        note = f"; {v['reason']}" if v["reason"] else ""
        one = v["detail"].get("one_seed_paired")
        if one and one["p"] is not None:
            lo, hi = one["interval"]
            note += f" (this seed over eval problems: {one['estimate']:+.3f} [{lo:+.3f}, {hi:+.3f}], p {one['p']:.3g})"
        lines.append(f"| {v['claim']} | **{v['verdict']}**{note} | {estimate} | {_interval(v)} | {p} | "
                     f"{v['test']}, {v['unit']} | {_units(v)} | {needed} |")
    return lines + [""]


def size_note(verdicts: list[dict]) -> list[str]:
    """The run's size in one line: how many directions its units decide."""
    if not verdicts:
        return []
    decided = sum(v["verdict"] in ("supported", "contradicted") for v in verdicts)
    testable = sum(v["verdict"] != "n/a" for v in verdicts)
    if decided == testable:
        return [f"All {testable} testable directions are decided at this size.", ""]
    if decided == 0:
        return [f"**{testable - decided} of {testable} testable directions are undecided at this size**: too few "
                f"units for the exact tests (the table gives the units each would need); a smoke run checks the "
                f"chain, not the paper.", ""]
    return [f"**{decided} of {testable} testable directions are decided at this size, {testable - decided} "
            f"undecided**: the table gives each one's reason and the units its test would need.", ""]


def matched_rows(failed: dict, matched: dict | None) -> list[str]:
    """The matched control's rows of the deletion table: its arms' pass@1 and its covariate balance."""
    if not matched:
        return []
    smd = {k: v["smd"] for k, v in matched["covariates"].items()}
    balance = ", ".join(f"{k} {'n/a' if v is None else f'{v:+.2f}'}" for k, v in smd.items())
    return [f"| Matched-del / Matched-keep pass@1 (a non-cliff position per cliff) | "
            f"{_num(_get(failed, 'matched_del', 'pass@1'))} / {_num(_get(failed, 'matched_keep', 'pass@1'))} | |",
            f"| matched controls: {matched['num_matched']} of {matched['num_matched'] + matched['num_unmatched']} "
            f"cliffs{_sources(matched.get('control_sources'))}; standardized mean differences | {balance} | |"]


def _sources(sources: dict | None) -> str:
    """Where the matched controls sit, e.g. " (12 in pool traces, 3 in failed)"; empty without a record."""
    named = [f"{n} in {'pool traces' if s == 'pool' else s}" for s, n in (sources or {}).items() if n]
    return f" ({', '.join(named)})" if named else ""


def resilience_rows(cell: dict | None) -> list[str]:
    """The deletion table's re-emission rows: del continuations that drew the cliff token again, and
    pass@1 of del, del_resilient (the cliff token forbidden at the first step) and keep side by side."""
    if not cell:
        return []
    return [f"| del continuations re-emitting the cliff token | {cell['num_reemitted']} of "
            f"{cell['num_del_continuations']} ({_pct(cell['reemitted_share'])}) | |",
            f"| Cliff-del / del-resilient / Cliff-keep pass@1 ({cell['num_cliffs_with_resilient']} cliffs) | "
            f"{_num(cell['del_pass_at_1'])} / {_num(cell['del_resilient_pass_at_1'])} / {_num(cell['keep_pass_at_1'])} "
            f"| |"]


SEED_FIGURES = ("uncertain_sampled_off-base", "all-random", "cliffs", "del_pass_at_1")


def seed_lines(seeds: dict) -> list[str]:
    """The between-seed spread of the figures the claims rest on, at both levels (metrics/seeds.json)."""
    levels = {k: v for k, v in seeds.items() if isinstance(v, dict) and v.get("seeds")}
    if not levels:
        return ["## Seeds", "", "One run is one seed: the Cliff-DPO claims stay undecided until `make seeds` saves "
                "two or more training seeds (docs/method.md, Seeds).", ""]
    lines = ["## Seeds", "", "| level | seeds | figure | mean | between-seed SD | 95% t-interval |",
             "|---|---|---|---|---|---|"]
    for level, cell in levels.items():
        for figure in SEED_FIGURES:
            s = cell["spread"].get(figure)
            if not s or not s["n"]:
                continue
            interval = "n/a" if s["ci_low"] is None else f"[{s['ci_low']:+.3f}, {s['ci_high']:+.3f}]"
            lines.append(f"| {level} | {s['n']} | {figure} | {_num(s['mean'])} | {_num(s['sd'])} | {interval} |")
    return lines + [""]
