"""Stage `risk`: can a cliff be predicted before any rollout? Risk models on the features of
data/risk_labels (logistic regression, gradient boosting, a linear probe on the hidden state) are
evaluated on held-out problems against single features alone: AUROC and AUPRC among feasible positions
with intervals over problems, recall of all and of replicated cliffs at budgets of positions, and the
reliability of the predicted risk (docs/risk.md). The logistic model fit on every problem is registered
in MLflow as `cliff-risk-<model>`.

    python pipeline/risk.py

Writes metrics/risk.{json,md} and runs/risk.json (the MLflow run id and registry version, and the fitted
logistic model that `cliffdata risk` scores with: `cache: false`).
The tracking store is MLFLOW_TRACKING_URI or <repo>/mlflow.db (cliffdata/tracking.py).
"""
import dataclasses
import json
import logging

from cliffdata import schema, tracking
from cliffdata.risk.evaluate import evaluate_risk, markdown
from cliffdata.risk.registry import register_risk_model, risk_model_name
from cliffdata.study import stage_params


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    params, _, layout = stage_params("risk", doc=__doc__)
    cfg = params.risk
    if cfg is None:
        raise SystemExit("risk: params.yaml has no `risk` section (docs/risk.md)")
    tracking.preflight("risk")                   # a tracking server that is down: seconds, not after the fits
    labels_path = layout.data("risk_labels")
    metrics, model = evaluate_risk(schema.read("risk_labels", labels_path), cfg)
    name = risk_model_name(params.model.name)
    layout.path("metrics").mkdir(parents=True, exist_ok=True)
    layout.path("metrics/risk.json").write_text(json.dumps(metrics, indent=2) + "\n")
    layout.path("metrics/risk.md").write_text(markdown(metrics, params.model.name))

    # the fitted logistic model itself, unrounded: `cliffdata risk` scores any trace or text with it
    record = {"registered_model": name, "version": None, "run_id": None,
              "tracking_uri": tracking.portable_uri(tracking.tracking_uri()),
              "model": None if model is None else model.to_dict()}
    if model is not None and 0 < metrics["num_population_cliffs"] < metrics["num_population"]:
        logistic = metrics["scorers"].get("logistic", {})
        record.update(register_risk_model(
            model, name, params={"risk": dataclasses.asdict(cfg)},
            metrics={"auroc": logistic.get("auroc"), "auprc": logistic.get("auprc"), "base_rate": metrics["base_rate"],
                     "num_population": metrics["num_population"]},
            tags={"stage": "risk", "model": params.model.name,
                  "risk_labels_sha256": schema.file_digest(labels_path)}))
    else:
        record["reason"] = "no model registered: the feasible positions hold one class only (or none)"
    layout.path("runs").mkdir(parents=True, exist_ok=True)
    layout.path("runs/risk.json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps({k: metrics[k] for k in ("num_population", "num_population_cliffs", "num_problems")}
                     | {"logistic_auroc": metrics["scorers"].get("logistic", {}).get("auroc"),
                        "version": record["version"]}))


if __name__ == "__main__":
    main()
