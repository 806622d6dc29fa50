"""Do a trained shapes model's embeddings carry the XOR bits, and does its joint score use them?

``builtin:shapes`` gives each item three bits, each owned by one modality: ``mark`` (image), ``tone``
(caption) and ``timbre`` (sound), with timbre = mark XOR tone. The demo asks Symile's joint query to
retrieve a target with the right bit from the other two modalities. This diagnostic separates two
reasons it can fail:

- ``probe``: a logistic regression fitted on the training items' embeddings of the owner modality,
  scored on the test items. Near 1: the encoder represents its bit linearly; near 0.5: it does not.
- ``joint``: the model's own joint-fact accuracy (``omnibind.evaluation.evaluate.joint_fact_metrics``:
  top-1 target of the composed query has the right bit); chance is about 0.5.

A high probe with a joint score at chance means the bits are there but the joint score does not combine
them (for Symile's multilinear product the three bits must be sign-coded on shared coordinates).

    python benchmarks/shapes_bits.py RUN [RUN ...]     # run folders of shapes models (e.g. a demo's DIR
                                                       # and DIR/symile)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import save  # noqa: E402

OWNERS = {"mark": "image", "tone": "caption", "timbre": "sound"}


def probe_run(run: Path) -> dict[str, Any]:
    """Probe and joint-fact accuracy of the model in ``run`` (a folder holding ``model/``)."""
    from sklearn.linear_model import LogisticRegression

    from omnibind.data.loading import build_kinds, build_splits
    from omnibind.evaluation.evaluate import embed_dataset, joint_fact_metrics
    from omnibind.model import OmniModel

    model = OmniModel.load(run / "model")
    splits = build_splits(
        model.config, build_kinds(model.config), ("train", "test"), fit=False, progress=False
    )
    embedded = {name: embed_dataset(model, ds) for name, ds in splits.datasets.items()}
    joint = joint_fact_metrics(*embedded["test"], splits.datasets["test"], model.joint_similarity)
    out: dict[str, Any] = {"objective": model.config.objective.name, "bits": {}}
    for bit, owner in OWNERS.items():
        if owner not in model.config.modalities:
            continue
        xy = []
        for name in ("train", "test"):
            emb, present = embedded[name]
            column = list(emb).index(owner)
            rows = present[:, column].nonzero().squeeze(1)
            facts = splits.datasets[name].facts
            y = np.array([int(facts[int(r)][bit]) for r in rows])
            xy.append((emb[owner][rows].numpy(), y))
        clf = LogisticRegression(max_iter=2000).fit(*xy[0])
        key = next((k for k in joint if k.startswith(f"{bit}:")), None)
        out["bits"][bit] = {
            "owner": owner,
            "probe": float(clf.score(*xy[1])),
            "joint": None if key is None else joint[key]["accuracy"],
            "chance": None if key is None else joint[key]["chance"],
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("runs", nargs="+", help="run folders (each with model/)")
    args = parser.parse_args()
    results: dict[str, Any] = {}
    print(f"{'run':40s} {'objective':10s} {'bit':7s} {'owner':8s} {'probe':>6s} {'joint':>6s} {'chance':>6s}")
    for run in args.runs:
        path = Path(run)
        if not (path / "model").is_dir():
            raise SystemExit(f"{run}: no model/ folder; pass a run folder (a demo's DIR or DIR/symile)")
        r = results[str(path)] = probe_run(path)
        for bit, b in r["bits"].items():
            joint = "" if b["joint"] is None else f"{b['joint']:6.3f}"
            chance = "" if b["chance"] is None else f"{b['chance']:6.3f}"
            print(
                f"{str(path)[-40:]:40s} {r['objective']:10s} {bit:7s} {b['owner']:8s} {b['probe']:6.3f} "
                f"{joint:>6s} {chance:>6s}"
            )
    print(f"wrote {save('shapes_bits', {'runs': results})}")


if __name__ == "__main__":
    main()
