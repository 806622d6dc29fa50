"""Image kind: a PNG/JPEG file (or shard member), an ``HxW`` / ``HxWxC`` array or a PIL image ->
``[C, size, size]``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from omnibind.data.kinds.base import KINDS, ModalityKind, open_file_value, read_structured
from omnibind.data.shards import ShardMember


@dataclass
class ImageOptions:
    """Options of the image kind.

    Attributes:
        size: images are resized (bilinear) to ``size x size``.
        channels: 3 (RGB; grey images are repeated) or 1 (grey; colour images are converted to luminance).
    """

    size: int = 32
    channels: int = 3

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError(f"image size must be positive, got {self.size}")
        if self.channels not in (1, 3):
            raise ValueError(f"image channels must be 1 or 3, got {self.channels}")


@KINDS.register("image")
class ImageKind(ModalityKind):
    """Images. ``load`` gives a float32 ``[H, W, C]`` array in 0..1; ``transform`` a float32
    ``[channels, size, size]`` tensor normalised to about -1..1 by ``(x - 0.5) / 0.5``."""

    name = "image"
    Options = ImageOptions
    default_encoder = "conv2d"

    def check(self, value: Any, base_dir: Path | None) -> None:
        """A file: it exists and PIL reads its header (format, size); the pixels are not decoded."""
        if not isinstance(value, (str, Path, ShardMember)):
            self.prepare(value, base_dir)
            return
        opened = open_file_value(value, base_dir, "an image file (PNG/JPEG)")
        if opened.suffix == ".npy":
            read_structured(opened, "an image array")
            return
        try:
            with Image.open(opened.file) as img:
                if img.width < 1 or img.height < 1:
                    raise opened.error("a non-empty image", f"size {img.size}")
        except (UnidentifiedImageError, OSError, SyntaxError) as exc:
            raise opened.error("a readable PNG/JPEG image", exc) from None

    def load(self, value: Any, base_dir: Path | None) -> np.ndarray:
        if isinstance(value, (str, Path, ShardMember)):
            opened = open_file_value(value, base_dir, "an image file (PNG/JPEG)")
            if opened.suffix == ".npy":  # an in-memory image written to a shard
                return self._from_array(np.asarray(read_structured(opened, "an image array")))
            try:
                with Image.open(opened.file) as img:
                    img.load()
                    return self._from_pil(img)
            except (UnidentifiedImageError, OSError, SyntaxError) as exc:
                raise opened.error("a readable PNG/JPEG image", exc) from None
        if isinstance(value, Image.Image):
            return self._from_pil(value)
        if isinstance(value, (np.ndarray, list)):
            return self._from_array(np.asarray(value))
        raise ValueError(
            f"expected an image path, a PIL image or an HxW / HxWxC array, got {type(value).__name__}"
        )

    def _from_pil(self, img: Image.Image) -> np.ndarray:
        img = img.convert("L" if self.options.channels == 1 else "RGB")
        arr = np.asarray(img, dtype=np.float32) / 255.0
        return arr[:, :, None] if arr.ndim == 2 else arr

    def _from_array(self, arr: np.ndarray) -> np.ndarray:
        if arr.ndim == 2:
            arr = arr[:, :, None]
        if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4) or arr.shape[0] == 0 or arr.shape[1] == 0:
            raise ValueError(f"expected an HxW or HxWxC image array with C in 1, 3, 4, got shape {arr.shape}")
        if arr.dtype == np.uint8:
            out = arr.astype(np.float32) / 255.0
        elif np.issubdtype(arr.dtype, np.floating):
            out = arr.astype(np.float32)
            if not np.isfinite(out).all():
                raise ValueError("expected finite pixel values, found NaN or inf")
            if out.min() < 0.0 or out.max() > 1.0:
                raise ValueError(
                    f"expected float pixels in 0..1 (or uint8 0..255), got range {out.min():g}..{out.max():g}"
                )
        else:
            raise ValueError(f"expected a uint8 (0..255) or float (0..1) image array, got dtype {arr.dtype}")
        out = out[:, :, :3]  # drop alpha
        if self.options.channels == 3 and out.shape[2] == 1:
            out = np.repeat(out, 3, axis=2)
        elif self.options.channels == 1 and out.shape[2] == 3:
            # ITU-R 601 luma, the weights PIL's convert("L") uses
            out = out @ np.array([[0.299], [0.587], [0.114]], dtype=np.float32)
        return np.ascontiguousarray(out)

    def transform(self, raw: np.ndarray) -> Tensor:
        size = self.options.size
        if raw.shape[0] != size or raw.shape[1] != size:
            # mode "F" keeps float precision through PIL's bilinear resize, one channel at a time
            planes = [
                np.asarray(
                    Image.fromarray(np.ascontiguousarray(raw[:, :, c])).resize((size, size), Image.BILINEAR)
                )
                for c in range(raw.shape[2])
            ]
            raw = np.stack(planes, axis=2)
        x = torch.from_numpy(np.ascontiguousarray(raw.transpose(2, 0, 1)))  # [C, size, size]
        return ((x - 0.5) / 0.5).float()

    def input_shape(self) -> tuple[int, ...]:
        return (self.options.channels, self.options.size, self.options.size)
