"""Stage `model`: materialise the base model under models/base/, and record the environment in
metrics/environment.json.

    python pipeline/model.py
"""
import json
import logging

from cliffdata.model import environment_record, materialize_model
from cliffdata.study import stage_params


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    params, _, layout = stage_params("model", doc=__doc__)
    cfg = params.model
    provenance = materialize_model(cfg.source, layout.path("models/base"), revision=cfg.revision)
    # beside the model's provenance: the environment that converted it and will run it (not in models/base,
    # so an equal conversion in another environment keeps the model's hash; compare it with `dvc metrics diff`)
    layout.path("metrics").mkdir(parents=True, exist_ok=True)
    record = json.dumps(environment_record(), indent=2, sort_keys=True) + "\n"
    layout.path("metrics/environment.json").write_text(record)
    print(json.dumps(provenance, indent=2))


if __name__ == "__main__":
    main()
