"""MNAR on AV-MNIST (the MultiModN finding): does a head learn "audio missing means digit d"?

Data: ``../shared/data/avmnist`` (real MNIST images paired with FSDD recordings of the same digit; the
500 test pairs, 50 per digit, come from a speaker never heard in training). Training: the
``examples/avmnist-classify.yaml`` schedule (up to 12 epochs, early stopping on validation accuracy) with
``data.missing`` removing the audio of 80% of the training and validation items of one digit
(``--digit``, default 0), and no modality dropout (``--dropout``), so that this is the only
missingness the heads see. Heads: ``sequential`` (MultiModN; fixed order image then audio, and
``order="shuffle"``, a new order per training batch), ``attention``, and the two imputation baselines,
``late`` without presence bits: ``impute="zeros"`` (a missing clip is filled with zeros before the audio
encoder, as hand-rolled pipelines do) and ``impute="zero-vectors"`` (a zero embedding in the slot).

Test (``omnibind.evaluation.robustness.mnar_test``): "clean" is the test split as it is (every item has
both modalities); "flipped" removes the audio of 80% of the test items of the next digit (40 of 500
items) through the presence mask. ``drop`` = clean - flipped accuracy over all 500 items, so it is at
most 8 points; ``affected`` gives the accuracy of the 40 items themselves. ``flipped to any`` repeats the
flip for each of the 9 other digits and averages the drop, so that the result does not hang on one
digit. ``to trained digit`` is the shortcut's signature: the share of all other digits' test items sent
to the training digit when they lose the modality. Expected (MultiModN): sequential and attention lose
at most 3 points, late-with-zeros clearly more.

    python benchmarks/fusion_mnar.py [--seeds 5] [--quick] [--modality audio] [--digit 0] [--dropout 0.0]
                                     [--heads sequential,attention] [--image-pca K] [--threads 1]
                                     [--root PATH]

``--image-pca K`` degrades the images as MultiBench's AV-MNIST does (K principal components, no mean;
``builtin:avmnist`` option ``image_pca``), so that the image no longer decides alone and a shortcut
through the missing audio can pay off; results go to ``fusion_mnar_pcaK.json``.

``--quick`` is a smoke test (1 seed, 400 pairs per split, 2 epochs: the models are barely trained and its
numbers mean nothing). ``--modality image`` makes the image (the stronger modality here) the one that
goes missing instead. Writes ``benchmarks/results/fusion_mnar.json`` (``fusion_mnar_image.json`` with
``--modality image``, ``..._dropout0.3.json`` with ``--dropout 0.3``, ``..._quick.json`` with ``--quick``,
and the heads in the name with ``--heads``).
"""

from __future__ import annotations

import argparse
import re
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from omnibind.config import apply_overrides, config_from_dict
from omnibind.data.loading import build_kinds, build_splits
from omnibind.evaluation.robustness import embed_dataset, flipped_class, mnar_test, without
from omnibind.training.classify import train_classifier

ROOT = Path(__file__).resolve().parents[1]
HEADS = {
    "sequential": {},
    "sequential(order=shuffle)": {"order": "shuffle"},
    "attention": {},
    "late(impute=zeros)": {"impute": "zeros"},
    "late(impute=zero-vectors)": {"impute": "zero-vectors"},
}
RATE = 0.8
ROBUST_MAX_DROP = 0.03  # sequential and attention: at most 3 points


def run_config(head: str, seed: int, args: argparse.Namespace) -> Any:
    """The AV-MNIST classify config with the MNAR setting, ``head`` and ``seed``."""
    raw = yaml.safe_load((ROOT / "examples" / "avmnist-classify.yaml").read_text())
    raw["task"]["head"] = head.split("(")[0]
    raw["task"]["head_options"] = HEADS[head]
    raw["task"]["modality_dropout"] = args.dropout
    raw["data"]["missing"] = [{"modality": args.modality, "rate": RATE, "value": str(args.digit)}]
    overrides = [
        f"data.root={args.root}",
        f"train.seed={seed}",
        f"train.threads={args.threads}",
        "train.progress=false",
    ]
    source = "builtin:avmnist?text=false" + (f"&image_pca={args.image_pca}" if args.image_pca else "")
    if args.quick:
        source += "&limit=400"
        overrides.append("train.epochs=2")
    overrides.append(f"data.source={source}")
    return config_from_dict(apply_overrides(raw, overrides))


def run(head: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """Train one head with one seed and run the MNAR test (flipped to the next digit, and to every other)."""
    cfg = run_config(head, seed, args)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        model = train_classifier(cfg, Path(tmp) / "run", evaluate=False).model
    train_seconds = time.perf_counter() - t0
    test = build_splits(model.config, build_kinds(model.config), ("train", "test"), fit=False, progress=False)
    train_set = test.datasets["train"]
    column = train_set.modalities.index(args.modality)
    of_digit = [i for i, y in enumerate(train_set.labels) if str(y) == str(args.digit)]
    missing_share = 1.0 - float(train_set.present[of_digit, column].float().mean())
    es = embed_dataset(model, test.datasets["test"])
    trained = str(args.digit)
    main = mnar_test(
        model,
        test.datasets["test"],
        args.modality,
        RATE,
        flipped_class(model.classes, trained),
        seed,
        embedded=es,
    )
    others = [c for c in model.classes if c != trained]
    drops = [
        mnar_test(model, test.datasets["test"], args.modality, RATE, c, seed, embedded=es)["drop"]
        for c in others
    ]
    # The shortcut's signature: with the modality removed from every test item of the other digits, how
    # many are sent to the training digit (a head that treats missing as "no information": few).
    j, t = es.column(args.modality), es.class_index(trained)
    rows = (es.targets != t).nonzero().squeeze(1)
    to_trained = float((es.logits(without(es.present, j, rows))[rows].argmax(1) == t).float().mean())
    return {
        "seed": seed,
        "clean": main["clean"]["accuracy"],
        "flipped": main["flipped"]["accuracy"],
        "drop": main["drop"],
        "affected_clean": main["affected"]["clean_accuracy"],
        "affected_flipped": main["affected"]["flipped_accuracy"],
        "dropped": main["dropped"],
        "flipped_label": main["flipped_label"],
        "drop_any_other": statistics.fmean(drops),
        "to_trained": to_trained,
        "train_missing_share": missing_share,
        "train_seconds": train_seconds,
    }


def spread(values: list[float]) -> dict[str, Any]:
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "values": values,
    }


def _cell(row: dict[str, Any], key: str, signed: bool = False) -> str:
    mean, std = row[key]["mean"], row[key]["std"]
    return f"{mean:+.3f}+-{std:.3f}" if signed else f"{mean:.3f}+-{std:.3f}"


KEYS = ("clean", "flipped", "drop", "affected_clean", "affected_flipped", "drop_any_other", "to_trained")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="1 seed, 400 pairs per split, 2 epochs")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument(
        "--modality", default="audio", choices=("audio", "image"), help="the one that goes missing"
    )
    parser.add_argument("--digit", type=int, default=0, help="the digit whose training items lose it")
    parser.add_argument("--dropout", type=float, default=0.0, help="task.modality_dropout during training")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1: steadiest on a busy machine)"
    )
    parser.add_argument("--heads", default=",".join(HEADS), help="comma-separated subset of the heads")
    parser.add_argument(
        "--image-pca",
        type=int,
        default=0,
        help="degrade the images to this many principal components (builtin:avmnist image_pca; 0: raw)",
    )
    parser.add_argument("--root", default=str(ROOT.parent / "shared" / "data" / "avmnist"))
    args = parser.parse_args()
    if not Path(args.root).exists():
        raise SystemExit(f"AV-MNIST data not found at {args.root}; pass --root PATH")
    from _common import save

    seeds = [0] if args.quick else list(range(args.seeds))
    name = "fusion_mnar" + ("" if args.modality == "audio" else f"_{args.modality}")
    name += "" if args.heads == ",".join(HEADS) else "_" + re.sub(r"\W+", "-", args.heads).strip("-")
    name += f"_pca{args.image_pca}" if args.image_pca else ""
    name += (f"_dropout{args.dropout:g}" if args.dropout else "") + ("_quick" if args.quick else "")
    payload: dict[str, Any] = {
        "data": "AV-MNIST (shared/data/avmnist), test = 500 pairs of an unseen speaker",
        "setting": {
            "modality": args.modality,
            "rate": RATE,
            "digit": args.digit,
            "modality_dropout": args.dropout,
            "image_pca": args.image_pca,
        },
        "seeds": seeds,
        "quick": args.quick,
        "complete": False,
        "results": {},
    }
    results = payload["results"]
    heads = [h.strip() for h in args.heads.split(",") if h.strip()]
    unknown = [h for h in heads if h not in HEADS]
    if unknown:
        raise SystemExit(f"--heads: unknown {', '.join(unknown)}; heads: {', '.join(HEADS)}")
    for head in heads:
        runs: list[dict[str, Any]] = []
        for seed in seeds:
            runs.append(run(head, seed, args))
            r = runs[-1]
            print(
                f"  {head} seed {seed}: clean {r['clean']:.3f} flipped {r['flipped']:.3f} "
                f"drop {r['drop']:+.3f} (affected {r['affected_clean']:.3f} -> {r['affected_flipped']:.3f}), "
                f"{r['train_seconds']:.0f} s",
                flush=True,
            )
            results[head] = {**{k: spread([x[k] for x in runs]) for k in KEYS}, "runs": runs}
            save(name, payload)  # partial results survive an interrupted run (complete: false)

    if all(h in results for h in ("sequential", "attention", "late(impute=zeros)")):
        robust = {h: results[h]["drop"]["mean"] <= ROBUST_MAX_DROP for h in ("sequential", "attention")}
        worst_robust = max(results[h]["drop"]["mean"] for h in ("sequential", "attention"))
        baseline = results["late(impute=zeros)"]["drop"]
        payload["check"] = {
            "robust_heads_drop_at_most": ROBUST_MAX_DROP,
            "robust": robust,
            "baseline_drops_more": baseline["mean"] > worst_robust + 2 * baseline["std"],
            "rule": "late(impute=zeros) mean drop > worst robust head's mean drop + 2 x its own std",
        }
    payload["complete"] = True
    first = next(iter(results.values()))["runs"][0]
    print(
        f"\nAV-MNIST MNAR: {args.modality} missing for {RATE:.0%} of digit {args.digit}'s train/val items; "
        f"at test, for {first['dropped']} items of digit {first['flipped_label']} (flipped). "
        f"{len(seeds)} seed(s), mean +- std."
    )
    print(
        f"{'head':26s} {'clean':>13s} {'flipped':>13s} {'drop':>14s} {'flipped items':>20s} "
        f"{'drop, any other':>16s} {'to trained digit':>16s}"
    )
    for head, r in results.items():
        items = f"{r['affected_clean']['mean']:.2f} -> {r['affected_flipped']['mean']:.2f}"
        print(
            f"{head:26s} {_cell(r, 'clean'):>13s} {_cell(r, 'flipped'):>13s} {_cell(r, 'drop', True):>14s} "
            f"{items:>20s} {_cell(r, 'drop_any_other', True):>16s} {_cell(r, 'to_trained'):>16s}"
        )
    print(f"check: {payload.get('check', 'needs sequential, attention and late(impute=zeros)')}")
    print(f"written {save(name, payload)}")


if __name__ == "__main__":
    main()
