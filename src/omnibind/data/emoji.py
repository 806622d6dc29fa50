"""Emoji: Twemoji images (64x64 RGB) with their CLDR English names and keywords (real image-text pairs).

The data lives outside the package (see ``shared/data/emoji_text/README.md``): ``images.npz`` (key
``images``, uint8 N x 64 x 64 x 3) and ``captions.jsonl`` (one row per image: index, split, label, tags,
group, ...). Each row becomes one record with an ``image`` and a ``text``; the text is the short name
(``text=label``) or the name followed by its keywords (``text=label+tags``).
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

FILES = ("images.npz", "captions.jsonl")
SOURCE = "builtin:emoji"
TEXTS = ("label", "label+tags", "views")


def _missing(root: Path | None) -> DataError:
    where = "no data root was given" if root is None else f"{str(root)!r} lacks {_absent(root)}"
    return DataError(
        f"emoji needs a folder with {', '.join(FILES)} (as in shared/data/emoji_text); {where}. "
        "Pass it with `--set data.root=PATH` (or data.root in the config).",
        source=SOURCE,
    )


def _absent(root: Path) -> str:
    return ", ".join(f for f in FILES if not (root / f).is_file())


@functools.lru_cache(maxsize=2)
def _images(root: str) -> np.ndarray:
    with np.load(Path(root) / "images.npz", allow_pickle=False) as z:
        images = z["images"]
    images.flags.writeable = False  # shared by every caller through the cache
    return images


@SOURCES.register("emoji")
def emoji(root: str | None = None, text: str = "label", limit: int = 0) -> LoadedData:
    """Load the emoji image-text pairs as records.

    Args:
        root: the folder holding ``images.npz`` and ``captions.jsonl``.
        text: ``"label"`` (the CLDR short name, e.g. "grinning face") or ``"label+tags"`` (the name, a
            colon and the keywords), or ``"views"``: two texts per image, the name and the keyword list
            (``["grinning face", "cheerful, cheery, face, ..."]``), for a text modality declared
            ``multi: true``.
        limit: if positive, keep only the first ``limit`` rows of each split (quick tests).

    Returns:
        records with ``image`` (uint8 ``[64, 64, 3]``) and ``text``; id ``emoji-HEXCODE``; label = the
        short name (unique per row); split from the file; facts ``{"name": label}``; metadata: emoji,
        name, group, subgroup.

    Raises:
        DataError: the folder is not given or incomplete, ``text`` is unknown, or a row is malformed.
    """
    if text not in TEXTS:
        raise DataError(f"text must be one of {', '.join(TEXTS)}, got {text!r}", source=SOURCE)
    folder = None if root is None else Path(root).expanduser()
    if folder is None or _absent(folder):
        raise _missing(folder)
    images = _images(str(folder.resolve()))
    path = folder / "captions.jsonl"
    records: list[Record] = []
    per_split: dict[str, int] = {}
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row: dict[str, Any] = json.loads(line)
                split, label = str(row["split"]), str(row["label"])
                if limit > 0 and per_split.get(split, 0) >= limit:
                    continue
                image = images[int(row["index"])]  # [64, 64, 3] uint8
                tags = ", ".join(row["tags"])
                caption: str | list[str] = {"label": label, "label+tags": f"{label}: {tags}"}.get(
                    text, [label, tags]
                )
            except (ValueError, KeyError, IndexError, TypeError) as exc:
                raise DataError(
                    f"expected a row with index, split, label, tags ({exc!r})", source=str(path), line=line_no
                ) from None
            per_split[split] = per_split.get(split, 0) + 1
            records.append(
                Record(
                    id=f"emoji-{row.get('hexcode', row['index'])}",
                    values={"image": image, "text": caption},
                    label=label,
                    split=split,
                    facts={"name": label},
                    metadata={k: row.get(k) for k in ("emoji", "group", "subgroup")},
                    source=SOURCE,
                    line=line_no,
                    base_dir=folder,
                )
            )
    return LoadedData(
        records=records,
        facts={"name": FactSpec(carriers=["image", "text"])},
        name="emoji",
        info={"root": str(folder), "splits": per_split},
    )
