"""The risk model in MLflow: a pyfunc holding the logistic model's coefficients, registered as
`cliff-risk-<model>` with its signature.

    with tracking.start_run("cliff-risk", "risk", params={...}) as run:
        info = log_risk_model(model, risk_model_name("SmolLM2-135M-Instruct"))
    mlflow.pyfunc.load_model(f"models:/{name}/{info.registered_model_version}").predict(features_frame)

The coefficients travel in the model config (a few numbers as JSON): no pickle, no scikit-learn at load
time, and the same σ(intercept + coef · standardised x) as `LinearRisk.predict`.
"""
from __future__ import annotations

import re

import mlflow.pyfunc
import numpy as np
import pandas as pd

from cliffdata.risk.model import LinearRisk

EXPERIMENT = "cliff-risk"


def risk_model_name(model_name: str) -> str:
    """`cliff-risk-<model>`: the model's name (`ModelConfig.name`), lowercased, [a-z0-9.-] only."""
    return "cliff-risk-" + re.sub(r"[^a-z0-9.]+", "-", model_name.lower()).strip("-")


class CliffRiskModel(mlflow.pyfunc.PythonModel):
    """`predict`: a DataFrame with one column per feature (the model config's `features`) in, a DataFrame with
    `risk` (the predicted probability that the cliff test fires at the token) out."""

    def load_context(self, context) -> None:
        self.model = LinearRisk.from_dict(context.model_config)

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        X = np.column_stack([model_input[f].to_numpy(dtype=np.float64) for f in self.model.features])
        return pd.DataFrame({"risk": self.model.predict(X)})


def risk_signature(features) -> object:
    """The pyfunc's input (a double per feature) and output (`risk`) schema, checked by MLflow at predict time."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, DataType, Schema

    return ModelSignature(inputs=Schema([ColSpec(DataType.double, f) for f in features]),
                          outputs=Schema([ColSpec(DataType.double, "risk")]))


def log_risk_model(model: LinearRisk, registered_name: str):
    """Log `model` as a pyfunc of the active run, with its signature, and register a new version of
    `registered_name`. Returns the ModelInfo (`info.registered_model_version`)."""
    return mlflow.pyfunc.log_model(
        name="cliff_risk", python_model=CliffRiskModel(), model_config=model.to_dict(),
        # explicit requirements: MLflow's inference would import the world and take a minute
        pip_requirements=["numpy", "pandas"], signature=risk_signature(model.features),
        registered_model_name=registered_name)


def register_risk_model(model: LinearRisk, registered_name: str, params: dict, metrics: dict[str, float | None],
                        tags: dict[str, str], root=None) -> dict:
    """One MLflow run (experiment `cliff-risk`, run `risk`) with `params`, the scalar `metrics` and `tags`,
    holding the registered pyfunc. Returns the record the stage keeps: registered name, version, run id."""
    from cliffdata import tracking

    with tracking.start_run(EXPERIMENT, "risk", params=params, tags=tags, root=root) as run:
        tracking.log_metrics(metrics)
        info = log_risk_model(model, registered_name)
    return {"registered_model": registered_name, "version": int(info.registered_model_version),
            "run_id": run.info.run_id}
