"""Stage `summary`: metrics/summary.md, the headline numbers of every stage beside the paper's reference
numbers (protocol §8), labelled as a different model and dataset, every direction's verdict
(metrics/verdicts.json: supported / contradicted / undecided with its counts, test and interval) and
the noise audit (metrics/directions.json: the paper's directions on all / feasible / replicated cliffs).

    python pipeline/summary.py
"""
import json
from pathlib import Path

from cliffdata.analysis import duck
from cliffdata.analysis import claims
from cliffdata.analysis.summary import headline, load_metrics, render_summary
from cliffdata.config.load import load_params, read_yaml
from cliffdata.seeds import fingerprint


def main() -> None:
    params = load_params()
    model = f"{params.model.name} (embedded)" if params.model.source == "embedded" else params.model.source
    datasets = ", ".join(sorted({s.dataset for s in params.problems.sources}))
    # the paper's directions on all / feasible / replicated cliffs (SQL over the experiments' data)
    needs = ["cliffs", "replicate", "ablation", "candidates"]
    con = duck.connect(Path("."), needs)
    directions = ("{}\n" if duck.views(con) != set(needs) else
                  duck.table_files(duck.run_sql_file(con, "directions", {}), "cliff_set")["json"])
    Path("metrics/directions.json").write_text(directions)
    if params.verdicts is None:
        raise SystemExit("params.yaml: the summary needs a `verdicts` section (alpha, power, exact_limit, resamples, "
                         "seed); see docs/method.md, Verdicts")
    metrics = load_metrics(Path("metrics"))
    # every direction's verdict, on the units the experiments wrote (docs/method.md, Verdicts); the
    # Cliff-DPO claims are decided over seeds, and one run is one seed
    with duck.connect(Path("."), ["cliffs", "trace_cliffs", "replicate", "ablation", "candidates", "dpo_eval"],
                      params.analysis) as units_con:
        units = claims.claim_units(units_con, params.cliffs.include_empty_prefix)
    variant_pairs = {v: c["num_train"] for v, c in ((metrics.get("dpo_pairs") or {}).get("variants") or {}).items()}
    accuracies = {k: v["accuracy"] for k, v in ((metrics.get("dpo_eval") or {}).get("models") or {}).items()
                  if v.get("accuracy") is not None}
    # the Cliff-DPO claims are decided over saved seeds (make seeds): the whole chain's where two or more
    # are saved (every source of variation), else training seeds (the pairs fixed), else this run alone
    seeds = json.loads(Path("metrics/seeds.json").read_text()) if Path("metrics/seeds.json").exists() else {}
    if seeds.get("params_fingerprint") != fingerprint(read_yaml("params.yaml")):
        seeds = {}                               # saved under other params: not this configuration's seeds
    per_seed, level = ([accuracies] if accuracies else []), "seeds"
    for name, label in (("chain", "whole-chain seeds"), ("training", "training seeds, pairs fixed")):
        saved = [r["accuracy"] for r in (seeds.get(name) or {}).get("seeds", [])]
        if len(saved) >= 2:
            per_seed, level = saved, label
            break
    balance = (metrics.get("ablation") or {}).get("matched_control")
    verdicts = claims.records(claims.directions(units, variant_pairs, per_seed, params.verdicts, balance, level))
    Path("metrics/verdicts.json").write_text(json.dumps(verdicts, indent=2, sort_keys=True) + "\n")
    text = render_summary(metrics, model, datasets, verdicts, seeds)
    Path("metrics/headline.json").write_text(json.dumps(headline(metrics), indent=2) + "\n")
    Path("metrics/summary.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
