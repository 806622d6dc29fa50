"""Uploaded media: the kind-keyed decoders and a media-type sniffer.

Uploaded bytes are decoded by the kind of their modality (:data:`DECODERS`, keyed by kind name), so a new
kind needs one entry here, no new route. An image's size is checked before it is decoded (a small file
can unpack huge).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

from omnibind.serving.errors import ApiError

MAX_PIXELS = 16_000_000  # an uploaded image larger than this is refused before it is decoded


def _decode_image(data: bytes) -> Any:
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(io.BytesIO(data))
        if img.width * img.height > MAX_PIXELS:  # checked before decoding: a small file can unpack huge
            raise ApiError(413, f"the image is {img.width}x{img.height}; at most {MAX_PIXELS:,} pixels")
        img.load()
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError) as exc:
        raise ApiError(400, f"the image is corrupt or not a PNG/JPEG/GIF/WebP file ({exc})") from None
    return img


def _decode_audio(data: bytes) -> Any:
    import numpy as np
    import soundfile

    try:
        wave, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)  # [samples, ch]
    except (RuntimeError, OSError, TypeError, ValueError) as exc:
        raise ApiError(400, f"the audio is corrupt or not a WAV/FLAC/OGG file ({exc})") from None
    wave = np.ascontiguousarray(wave.T)  # [channels, samples], as the audio kind takes it
    return (wave[0] if wave.shape[0] == 1 else wave), int(rate)


def _decode_text(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, "a text upload must be UTF-8") from None


# kind name -> (accepted media type prefix, decoder of file bytes into a raw value the kind loads)
DECODERS: dict[str, tuple[str, Callable[[bytes], Any]]] = {
    "image": ("image/", _decode_image),
    "audio": ("audio/", _decode_audio),
    "text": ("text/", _decode_text),
}

MAGIC = [
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF8", "image/gif"),
    (b"RIFF", "audio/wav"),  # WebP is RIFF....WEBP, checked first in _sniff
    (b"fLaC", "audio/flac"),
    (b"OggS", "audio/ogg"),
    (b"ID3", "audio/mpeg"),
]


def sniff(data: bytes) -> str | None:
    """The media type of file bytes from their first bytes, or None."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return next((t for magic, t in MAGIC if data.startswith(magic)), None)
