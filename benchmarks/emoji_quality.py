"""Retrieval quality on real data: emoji names -> emoji images, full width and Matryoshka prefixes.

Data: ``../shared/data/emoji_text`` (Twemoji images and CLDR names, real). ``examples/emoji.yaml``
(image conv encoder trained from scratch, MiniLM text frozen with a trained projection, D = 128) is
trained on the 1,526 train emoji with the text "name: keywords" and a Matryoshka objective over the
prefixes 32, 64 and 128. On the 190 test emoji (never seen in training) each query is the emoji's
*name* alone and the one relevant target is its image. Reported: text->image R@1 and R@10 at each
prefix width (cut, renormalised), on all test emoji and without the flags group (near-duplicates).

    python benchmarks/emoji_quality.py [--epochs 20] [--root ../shared/data/emoji_text]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from omnibind.config import load_config
from omnibind.data.loading import build_kinds, build_splits
from omnibind.evaluation.evaluate import embed_dataset
from omnibind.evaluation.retrieval import rank_metrics
from omnibind.training.trainer import train

ROOT = Path(__file__).resolve().parents[1]
PREFIXES = (32, 64, 128)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--root", default=str(ROOT.parent / "shared" / "data" / "emoji_text"))
    args = parser.parse_args()
    if not Path(args.root).exists():
        raise SystemExit(f"emoji data not found at {args.root}; pass --root PATH")
    from _common import save

    overrides = [
        f"data.root={args.root}",
        f"train.epochs={args.epochs}",
        "train.progress=false",
        "objective.matryoshka={dims: [32, 64, 128]}",
        "modalities.image.encoder.name=conv2d",  # the example's image tower is now EfficientNet-Lite0
    ]
    cfg = load_config(ROOT / "examples" / "emoji.yaml", overrides)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        model = train(cfg, Path(tmp) / "run").model
    seconds = time.perf_counter() - t0
    # Queries are the names alone, although training saw "name: keywords".
    test = build_splits(
        model.config,
        build_kinds(model.config),
        ("test",),
        fit=False,
        progress=False,
        source="builtin:emoji?text=label",
    ).datasets["test"]
    emb, present = embed_dataset(model, test)
    assert bool(present.all()), "every emoji has both an image and a name"
    groups = [r.metadata.get("group") for r in test.records]
    subsets = {
        "all": torch.ones(len(test), dtype=torch.bool),
        "without flags": torch.tensor([g != "flags" for g in groups]),
    }
    rows = []
    print(f"emoji test split: {len(test)} items; trained {args.epochs} epochs in {seconds:.0f} s")
    print(
        f"{'width':>11s} {'subset':>14s} {'n':>5s} {'text->image R@1':>16s} {'R@10':>6s}"
        f" {'image->text R@1':>16s}"
    )
    for width in PREFIXES:
        text = F.normalize(emb["text"][:, :width], dim=-1)
        image = F.normalize(emb["image"][:, :width], dim=-1)
        for name, keep in subsets.items():
            t, i = text[keep], image[keep]
            relevant = torch.eye(len(t), dtype=torch.bool)
            t2i = rank_metrics(t @ i.T, relevant)
            i2t = rank_metrics(i @ t.T, relevant)
            rows.append(
                {"width": width, "subset": name, "n": int(keep.sum()), "text->image": t2i, "image->text": i2t}
            )
            label = f"{width}" + (" (full)" if width == PREFIXES[-1] else "")
            print(
                f"{label:>11s} {name:>14s} {int(keep.sum()):5d} {t2i['r@1']:16.3f} {t2i['r@10']:6.3f}"
                f" {i2t['r@1']:16.3f}"
            )
    print(f"written {save('emoji_quality', {'rows': rows, 'epochs': args.epochs, 'train_seconds': seconds})}")


if __name__ == "__main__":
    main()
