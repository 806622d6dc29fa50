"""Draw the figures of docs/builtin-data.md from ``builtin:shapes``: 16 images with captions, 4 spectrograms.

Run from the repository root: ``python docs/make_shapes_figure.py``. Needs only numpy and Pillow.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from omnibind.data.synthetic import shapes

OUT = Path(__file__).parent / "img"
FONT = ImageFont.load_default()


def contact_sheet(records: list, scale: int = 4, cols: int = 4) -> Image.Image:
    """Images enlarged ``scale`` times (nearest neighbour, so pixels stay honest), caption and bits below."""
    side = records[0].values["image"].shape[0] * scale
    cell_w, cell_h = max(side, 200), side + 80
    rows = -(-len(records) // cols)
    sheet = Image.new("RGB", (cols * cell_w, rows * cell_h), "white")
    draw = ImageDraw.Draw(sheet)
    for k, r in enumerate(records):
        x, y = (k % cols) * cell_w, (k // cols) * cell_h
        img = Image.fromarray(r.values["image"]).resize((side, side), Image.NEAREST)
        sheet.paste(img, (x + (cell_w - side) // 2, y + 4))
        f = r.facts
        text = textwrap.wrap(r.values["caption"], 34) + [
            f"mark={f['mark']} tone={f['tone']} timbre={f['timbre']}"
        ]
        draw.multiline_text((x + 4, y + side + 8), "\n".join(text), fill="black", font=FONT)
    return sheet


def spectrogram(wave: np.ndarray, n_fft: int = 256, hop: int = 64) -> np.ndarray:
    """Log-magnitude STFT ``[freq, time]`` in dB, Hann window."""
    frames = np.lib.stride_tricks.sliding_window_view(wave, n_fft)[::hop] * np.hanning(n_fft)
    mag = np.abs(np.fft.rfft(frames, axis=1)).T  # [n_fft / 2 + 1, frames]
    return 20 * np.log10(mag + 1e-4)


def spectrogram_panel(records: list, sample_rate: int, height: int = 258) -> Image.Image:
    """One spectrogram per record side by side, low frequencies at the bottom, with the facts as title."""
    tiles = []
    for r in records:
        db = spectrogram(r.values["sound"])[::-1]  # high frequencies on top
        level = np.clip((db - db.max() + 70) / 70, 0, 1)  # 70 dB range
        rgb = np.stack([level**0.5, level**1.5, 0.3 * (1 - level) + level**4], axis=-1)
        img = Image.fromarray((255 * rgb).astype(np.uint8)).resize((240, height), Image.NEAREST)
        tile = Image.new("RGB", (250, height + 44), "white")
        tile.paste(img, (5, 40))
        f = r.facts
        title = f"{f['colour']} {f['shape']}\ntimbre={f['timbre']}  0-{sample_rate // 2} Hz"
        ImageDraw.Draw(tile).multiline_text((5, 4), title, fill="black", font=FONT)
        tiles.append(tile)
    panel = Image.new("RGB", (250 * len(tiles), height + 44), "white")
    for k, tile in enumerate(tiles):
        panel.paste(tile, (250 * k, 0))
    return panel


def main() -> None:
    OUT.mkdir(exist_ok=True)
    data = shapes(n=400, seed=0)
    records = data.records
    contact_sheet(records[:16]).save(OUT / "shapes-examples.png")
    # Four sounds that differ in one fact at a time: colour (pitch), shape (rhythm), timbre (harmonics).
    wanted = [
        ("red", "circle", 0),
        ("yellow", "circle", 0),
        ("yellow", "triangle", 0),
        ("yellow", "triangle", 1),
    ]
    picked = [
        next(r for r in records if (r.facts["colour"], r.facts["shape"], r.facts["timbre"]) == w)
        for w in wanted
    ]
    spectrogram_panel(picked, data.info["sample_rate"]).save(OUT / "shapes-sounds.png")
    print(f"wrote {OUT / 'shapes-examples.png'} and {OUT / 'shapes-sounds.png'}")


if __name__ == "__main__":
    main()
