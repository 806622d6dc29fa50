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


@SOURCES.register("avmnist")
def avmnist(root: str | None = None, text: bool = True, limit: int = 0) -> LoadedData:
    """Load AV-MNIST pairs as records.

    Args:
        root: the folder holding ``mnist_images.npz``, ``fsdd_audio.npz`` and ``pairs.jsonl``.
        text: add a ``text`` modality, "the digit {name}".
        limit: if positive, keep only the first ``limit`` pairs of each split (quick tests).

    Returns:
        records with ``image``, ``audio`` (and ``text``), label = digit, split from ``pairs.jsonl``,
        facts ``{"digit": name}`` and metadata ``{"speaker": ...}``.

    Raises:
        DataError: the data folder is not given or incomplete, or a pair is malformed.
    """
    folder = None if root is None else Path(root).expanduser()
    if folder is None or _absent_files(folder):
        raise _missing(folder)
    arrays = _arrays(str(folder.resolve()))
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
