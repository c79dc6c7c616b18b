"""Stage `model`: materialise the base model under models/base/, and record the environment in
metrics/environment.json.

    python pipeline/model.py
"""
import json
import logging
from pathlib import Path

from cliffdata.model import environment_record, materialize_model
from cliffdata.study import stage_params


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cfg = stage_params("model", doc=__doc__)[0].model
    provenance = materialize_model(cfg.source, "models/base", revision=cfg.revision)
    # beside the model's provenance: the environment that converted it and will run it (not in models/base,
    # so an equal conversion in another environment keeps the model's hash; compare it with `dvc metrics diff`)
    Path("metrics").mkdir(exist_ok=True)
    Path("metrics/environment.json").write_text(json.dumps(environment_record(), indent=2, sort_keys=True) + "\n")
    print(json.dumps(provenance, indent=2))


if __name__ == "__main__":
    main()
