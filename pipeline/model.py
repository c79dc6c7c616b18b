"""Stage `model`: materialise the base model under models/base/.

    python pipeline/model.py
"""
import json
import logging

from cliffdata.config import load_params
from cliffdata.model import materialize_model


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cfg = load_params().model
    provenance = materialize_model(cfg.source, "models/base", revision=cfg.revision)
    print(json.dumps(provenance, indent=2))


if __name__ == "__main__":
    main()
