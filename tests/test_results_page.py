"""docs/results.md's tables of the embedded run say what the committed metrics say: each row below is
rebuilt from metrics/*.json and must match the page, so a re-run that changes a figure fails here until
the page is updated with it (and with the commit and machine of that run)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "results.md"


def metrics(name: str) -> dict:
    return json.loads((ROOT / "metrics" / f"{name}.json").read_text())


def table_rows(section: str) -> dict[str, list[str]]:
    """The `| quantity | value | commit | machine |` rows under `## <section>`: quantity -> its four cells."""
    text = PAGE.read_text()
    start = text.index(f"\n## {section}\n")
    end = text.find("\n## ", start + 1)
    rows = {}
    for line in text[start:end if end > 0 else None].splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0] not in ("quantity", "---"):
            rows[cells[0]] = cells
    return rows


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def signed(x: float) -> str:
    return f"{x:.2f}".replace("-", "−")


def embedded() -> dict[str, str]:
    occ, tax, abl, cpm = metrics("occurrence"), metrics("taxonomy"), metrics("ablation"), metrics("cpm")
    failed = abl["all"]["failed"]
    ks = sorted(int(k.split("@")[1]) for k in failed["del"] if k.startswith("pass@"))
    top = f"pass@{ks[-1]}"
    return {
        "traces: correct / failed": f"{occ['all']['num_traces']}: {occ['correct']['num_traces']} / "
                                    f"{occ['failed']['num_traces']}",
        "cliffs": f"{occ['all']['num_cliffs']} in {occ['all']['num_tested_pairs']} tested pairs: "
                  f"{tax['uncertain']['num_cliffs']} uncertain, {tax['sampled_off']['num_cliffs']} sampled-off, "
                  f"{tax['deterministic']['num_cliffs']} deterministic",
        "traces with a cliff: correct / failed": f"{pct(occ['correct']['share_with_cliff'])} / "
                                                 f"{pct(occ['failed']['share_with_cliff'])}",
        "cliffs per trace / per 1k tokens": f"{occ['all']['cliffs_per_trace']:.3f} / "
                                            f"{occ['all']['cliffs_per_1k_tokens']:.1f}",
        f"failed traces: Cliff-del pass@1 / {top}": f"{failed['del']['pass@1']:.3f} / {failed['del'][top]:.3f} "
                                                    f"({failed['del']['num_instances']} cliff instances)",
        f"failed traces: Cliff-keep pass@1 / {top}": f"{failed['keep']['pass@1']:.3f} / {failed['keep'][top]:.3f}",
        "failed traces: Matched-del / Matched-keep pass@1": matched(failed, abl["matched_control"]),
        "CPM by category (over alternatives)": ", ".join(
            f"{c.replace('_', '-')} {cpm[c]['cpm_mean']:.3f} ({cpm[c]['cpm_alternatives_mean']:.3f}), "
            f"{cpm[c]['num_cliffs']} cliffs" for c in ("uncertain", "sampled_off") if cpm[c]["num_cliffs"]),
    }


def matched(failed: dict, balance: dict) -> str:
    smd = {k: signed(v["smd"]) for k, v in balance["covariates"].items()}
    where = ", ".join(f"{n} in {'pool traces' if s == 'pool' else f'{s} traces'}"
                      for s, n in balance["control_sources"].items() if n)
    return (f"{failed['matched_del']['pass@1']:.3f} / {failed['matched_keep']['pass@1']:.3f}; SMD p[i−1] "
            f"{smd['p_prev']}, relative position {smd['relative_position']}, sampler probability "
            f"{smd['sampler_prob']}, greedy {smd['is_greedy']} ({balance['num_matched']} of "
            f"{balance['num_matched'] + balance['num_unmatched']} cliffs matched; {where})")


def noise() -> dict[str, str]:
    occ = metrics("occurrence")
    return {f"{group} traces: tested pairs, cliffs, expected by noise, excess [95%]":
            f"{c['num_tested_pairs']}, {c['num_cliffs']}, {c['expected_false_cliffs']:.2f}, {signed(c['excess_cliffs'])} "
            f"[{signed(c['excess_cliffs_lo'])}, {signed(c['excess_cliffs_hi'])}]"
            for group, c in ((g, occ[g]) for g in ("correct", "failed", "all"))}


def decisive() -> dict[str, str]:
    """The decisive preset's run, saved under results/decisive/ (python -m cliffdata.preset ... --name)."""
    where = ROOT / "results" / "decisive"
    run = json.loads((where / "run.json").read_text())
    occ, tax, rep, roll = (json.loads((where / "metrics" / f"{n}.json").read_text())
                           for n in ("occurrence", "taxonomy", "replicate", "rollouts"))
    rows = {
        "run: traces, search, wall time": f"{occ['all']['num_traces']} ({occ['correct']['num_traces']} correct, "
                                          f"{occ['failed']['num_traces']} failed), {roll['mode']}, "
                                          f"{run['wall_seconds']:,.0f} s",
        "rollouts": f"{roll['num_rollouts']:,} rollouts, {roll['num_generated_tokens']:,} generated tokens",
        "cliffs": f"{occ['all']['num_cliffs']} in {occ['all']['num_tested_pairs']} tested pairs: "
                  f"{tax['uncertain']['num_cliffs']} uncertain, {tax['sampled_off']['num_cliffs']} sampled-off, "
                  f"{tax['deterministic']['num_cliffs']} deterministic; excess over noise "
                  f"{occ['all']['excess_cliffs']:.2f} [{occ['all']['excess_cliffs_lo']:.0f}, "
                  f"{occ['all']['excess_cliffs_hi']:.0f}]",
        "replicated [95% Wilson]": f"{rep['all']['num_replicated']}/{rep['all']['num_cliffs']} = "
                                   f"{pct(rep['all']['rate'])} [{pct(rep['all']['rate_lo'])}, {pct(rep['all']['rate_hi'])}]",
    }
    abl = json.loads((where / "metrics" / "ablation.json").read_text())
    rows["failed traces: Matched-del / Matched-keep pass@1"] = matched(abl["all"]["failed"], abl["matched_control"])
    if "rerun" in run:
        rows["matched controls re-drawn: stages, wall time"] = (f"{', '.join(run['rerun']['stages'])}; "
                                                                f"{run['rerun']['wall_seconds']:,.0f} s")
    for v in json.loads((where / "metrics" / "verdicts.json").read_text())["main"]:
        if v["verdict"] == "n/a":
            rows[v["claim"]] = f"n/a: {v['reason']}"
            continue
        interval = "" if v["interval"] is None else (
            f" OR [{v['interval'][0]:.2f}, {v['interval'][1]:.2f}]" if v["claim"].startswith("share of traces")
            else f" [{v['interval'][0]:+.3f}, {v['interval'][1]:+.3f}]")
        p = "" if v["p"] is None else f", p = {v['p']:.3g}"
        reason = f"; {v['reason'].replace('|', '')}" if v["reason"] else ""       # no cell breaks
        rows[v["claim"]] = f"{v['verdict']}: {v['estimate']:+.3f}{interval}{p}{reason}"
    return rows


@pytest.mark.parametrize("section,expected", [("The embedded run", embedded), ("The noise audit", noise),
                                              ("The decisive run", decisive)], ids=["embedded", "noise", "decisive"])
def test_results_page_matches_the_committed_metrics(section, expected):
    page = {quantity: cells[1] for quantity, cells in table_rows(section).items()}
    want = expected()
    missing = sorted(set(want) - set(page))
    assert not missing, f"docs/results.md, {section}: no row for {missing}"
    wrong = {k: (page[k], v) for k, v in want.items() if page[k] != v}
    assert not wrong, f"docs/results.md, {section}: (page, metrics) differ: {wrong}"


def test_every_row_names_a_commit_and_a_known_machine():
    text = PAGE.read_text()
    machines = set(re.findall(r"^\| `([\w-]+)` \| ", text[text.index("## Machines"):text.index("## The embedded run")],
                              re.M))
    for section in ("The embedded run", "The noise audit", "The decisive run"):
        for cells in table_rows(section).values():
            assert re.fullmatch(r"[0-9a-f]{7}", cells[2]), cells
            assert cells[3].strip("`") in machines, cells
