"""AV-MNIST: an MNIST digit image paired with a spoken digit (FSDD), speaker-disjoint splits.

The data lives outside the package (see ``shared/data/avmnist/README.md``): ``mnist_images.npz``,
``fsdd_audio.npz`` and ``pairs.jsonl``. Each pair becomes one record with an ``image`` (uint8 28x28),
an ``audio`` waveform (float32 in [-1, 1), 8 kHz) and, optionally, a ``text`` caption naming the digit.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import numpy as np

from omnibind.data.record import Record
from omnibind.data.sources import SOURCES, FactSpec, LoadedData
from omnibind.errors import DataError

DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
FILES = ("mnist_images.npz", "fsdd_audio.npz", "pairs.jsonl")
SOURCE = "builtin:avmnist"


def _missing(root: Path | None) -> DataError:
    where = "no data root was given" if root is None else f"{str(root)!r} lacks {_absent_files(root)}"
    return DataError(
        f"AV-MNIST needs a folder with {', '.join(FILES)} (as in shared/data/avmnist); {where}. "
        "Pass it with `--set data.root=PATH` (or data.root in the config).",
        source=SOURCE,
    )


def _absent_files(root: Path) -> str:
    return ", ".join(f for f in FILES if not (root / f).is_file())


@functools.lru_cache(maxsize=2)
def _arrays(root: str) -> dict[str, np.ndarray]:
    """Every array once; npz members are re-read on each access, so they are pulled out here."""
    out: dict[str, np.ndarray] = {}
    with np.load(Path(root) / "mnist_images.npz", allow_pickle=False) as m:
        out["train_pool"] = m["train_pool_images"]
        out["test_pool"] = m["test_pool_images"]
    with np.load(Path(root) / "fsdd_audio.npz", allow_pickle=False) as a:
        out["audio"] = a["audio"]
        out["offsets"] = a["offsets"]
        out["sample_rate"] = np.asarray(int(a["sample_rate"]))
    for arr in out.values():
        arr.flags.writeable = False  # shared by every caller through the cache
    return out


def degrade_images(images: np.ndarray, components: int) -> np.ndarray:
    """MultiBench-style image degradation: keep ``components`` principal components, drop the mean.

    A PCA is fitted on ``images`` ``[n, 28, 28]`` (one pool: MultiBench fits the training and the test
    images separately) and each image is replaced by the projection of its centred pixels onto the
    leading ``components`` directions, without adding the mean back; the result is scaled to 0..255
    over the pool and returned as uint8 ``[n, 28, 28]``.
    """
    n = images.shape[0]
    x = images.reshape(n, -1).astype(np.float64)
    centred = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)  # rows of vt: principal directions
    v = vt[:components]  # [k, 784]
    out = (centred @ v.T) @ v  # [n, 784]
    lo, hi = out.min(), out.max()
    scaled = np.round(255.0 * (out - lo) / max(hi - lo, 1e-12))
    return scaled.astype(np.uint8).reshape(images.shape)


@functools.lru_cache(maxsize=2)
def _degraded_pools(root: str, components: int) -> dict[str, np.ndarray]:
    """Each image pool with the images the pairs use degraded (fitted over those images), the rest zero."""
    arrays = _arrays(root)
    used: dict[str, set[int]] = {"train_pool": set(), "test_pool": set()}
    with open(Path(root) / "pairs.jsonl", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                pair = json.loads(line)
                used[pair["image_pool"]].add(int(pair["image_index"]))
    out: dict[str, np.ndarray] = {}
    for pool, rows in used.items():
        index = np.array(sorted(rows), dtype=np.int64)
        degraded = np.zeros_like(arrays[pool])
        if len(index):
            degraded[index] = degrade_images(arrays[pool][index], components)
        degraded.flags.writeable = False
        out[pool] = degraded
    return out


@SOURCES.register("avmnist")
def avmnist(root: str | None = None, text: bool = True, limit: int = 0, image_pca: int = 0) -> LoadedData:
    """Load AV-MNIST pairs as records.

    Args:
        root: the folder holding ``mnist_images.npz``, ``fsdd_audio.npz`` and ``pairs.jsonl``.
        text: add a ``text`` modality, "the digit {name}".
        limit: if positive, keep only the first ``limit`` pairs of each split (quick tests).
        image_pca: if positive, degrade the images as MultiBench's AV-MNIST does: keep this many
            principal components (fitted per image pool, over the images the pairs use), without the
            mean (:func:`degrade_images`). MultiBench's generator keeps 196; fewer make the image weaker.

    Returns:
        records with ``image``, ``audio`` (and ``text``), label = digit, split from ``pairs.jsonl``,
        facts ``{"digit": name}`` and metadata ``{"speaker": ...}``.

    Raises:
        DataError: the data folder is not given or incomplete, or a pair is malformed.
    """
    folder = None if root is None else Path(root).expanduser()
    if folder is None or _absent_files(folder):
        raise _missing(folder)
    if isinstance(image_pca, bool) or not isinstance(image_pca, int) or not 0 <= image_pca <= 784:
        raise DataError(
            f"image_pca must be a number of components in 0..784, got {image_pca!r}", source=SOURCE
        )
    arrays = _arrays(str(folder.resolve()))
    if image_pca:
        arrays = {**arrays, **_degraded_pools(str(folder.resolve()), image_pca)}
    audio, offsets = arrays["audio"], arrays["offsets"]
    rate = int(arrays["sample_rate"])
    pairs_path = folder / "pairs.jsonl"
    records: list[Record] = []
    per_split: dict[str, int] = {}
    with open(pairs_path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                pair = json.loads(line)
                split = str(pair["split"])
                if limit > 0 and per_split.get(split, 0) >= limit:
                    continue
                digit = int(pair["label"])
                i = int(pair["audio_index"])
                image = arrays[pair["image_pool"]][int(pair["image_index"])]  # [28, 28] uint8
            except (ValueError, KeyError, IndexError, TypeError) as exc:
                raise DataError(
                    f"expected a pair with split, label, audio_index, image_pool, image_index ({exc!r})",
                    source=str(pairs_path),
                    line=line_no,
                ) from None
            per_split[split] = per_split.get(split, 0) + 1
            # int16 PCM -> float32 in [-1, 1)
            wave = audio[offsets[i] : offsets[i + 1]].astype(np.float32) / 32768.0
            values: dict[str, Any] = {"image": image, "audio": (wave, rate)}
            if text:
                values["text"] = f"the digit {DIGITS[digit]}"
            records.append(
                Record(
                    id=str(pair["pair_id"]),
                    values=values,
                    label=digit,
                    split=split,
                    facts={"digit": DIGITS[digit]},
                    metadata={"speaker": pair.get("speaker")},
                    source=SOURCE,
                    line=line_no,
                    base_dir=folder,
                )
            )
    carriers = ["image", "audio"] + (["text"] if text else [])
    return LoadedData(
        records=records,
        facts={"digit": FactSpec(carriers=carriers)},
        name="avmnist",
        info={"root": str(folder), "sample_rate": rate, "splits": per_split},
    )
