"""Run under torchrun by tests/training/test_distributed.py: train each (config, out) pair of a JSON file.

One launch trains many configs, so the 2-process checks pay torchrun's start-up once.
"""

from __future__ import annotations

import json
import sys

from omnibind.config import config_from_dict
from omnibind.training.trainer import train


def main(spec_path: str) -> None:
    """Train every ``{"raw": config dict, "out": folder}`` listed in ``spec_path``."""
    with open(spec_path) as fh:
        jobs = json.load(fh)
    for job in jobs:
        train(config_from_dict(job["raw"]), job["out"], resume=job.get("resume", False))


if __name__ == "__main__":
    main(sys.argv[1])
