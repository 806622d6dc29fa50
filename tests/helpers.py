"""Helpers shared by tests: tiny configs over built-in data, the shared data folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from omnibind.training.callbacks import Callback

# every objective the exactness tests (GradCache, torchrun) cover, as objective config sections
EXACTNESS_OBJECTIVES = {
    "infonce-all": {"name": "infonce"},
    "infonce-star": {"name": "infonce", "pairs": "caption"},
    "siglip": {"name": "siglip"},
    "symile-n": {"name": "symile", "negatives": "n"},
    "symile-n2": {"name": "symile", "negatives": "n2"},
    "matryoshka": {"name": "infonce", "matryoshka": {"dims": [4, 16]}},
}

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def shared_data(name: str) -> Path:
    """Path of a folder of ``../shared/data``; skips the test with a clear message when it is absent."""
    path = SHARED / "data" / name
    if not path.exists():
        pytest.skip(f"shared data folder {path} is absent (it sits beside the repository in CI)")
    return path


def tiny_shapes_config(objective: str = "symile", n: int = 240, epochs: int = 2, **train: object) -> dict:
    """A raw config dict for a few quick steps on the shapes data."""
    return {
        "modalities": {
            "image": {"kind": "image", "size": 16, "encoder": {"name": "conv2d", "width": 8}},
            "caption": {"kind": "text", "encoder": {"name": "bag_of_tokens", "width": 16, "buckets": 512}},
            "sound": {"kind": "audio", "sample_rate": 8000, "seconds": 0.25, "n_mels": 16, "n_fft": 128},
            "table": {"kind": "tabular", "columns": ["width", "height", "x", "y"]},
        },
        "data": {"source": f"builtin:shapes?n={n}&missing=0.2&image_size=16&seconds=0.25"},
        "model": {"dim": 16},
        "objective": {"name": objective},
        "train": {
            "epochs": epochs,
            "batch_size": 32,
            "lr": 0.003,
            "warmup_steps": 2,
            "progress": False,
            **train,
        },
        "eval": {
            "zero_shot": [
                {
                    "name": "shape_colour",
                    "fields": ["shape", "colour"],
                    "text": "caption",
                    "prompts": ["a {colour} {shape}"],
                    "targets": ["image"],
                }
            ]
        },
    }


def kill_tree(root: int) -> None:
    """SIGKILL a process and all its descendants (read from ``/proc``), as a machine failure would.

    torchrun's workers run in their own sessions, so killing its process group is not enough.
    """
    import os
    import signal

    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    for pid in found:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class Crash(Callback):
    """Stops a training run with ``KeyboardInterrupt`` after step ``at`` (a crash to resume from)."""

    def __init__(self, at: int) -> None:
        self.at = at

    def on_step(self, step: int, logs: dict) -> None:
        if step == self.at:
            raise KeyboardInterrupt("simulated crash")
