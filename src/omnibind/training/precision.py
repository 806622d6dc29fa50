"""Where training runs and in which number format: ``train.device`` and ``train.precision``.

``resolve_device`` turns ``auto | cpu | cuda | cuda:N | mps`` into a ``torch.device`` (``auto``: the first
CUDA device where there is one, else the CPU) and refuses a device this machine does not have.
:class:`Precision` says how a step runs in ``fp32 | bf16 | fp16 | fp64``:

- ``fp32``: as written;
- ``bf16`` / ``fp16``: the encoders run under ``torch.autocast``; embeddings are cast back to fp32 before
  the objective, so every loss is computed in fp32; ``fp16`` scales the loss with a ``GradScaler`` (CUDA
  only: fp16 autocast on the CPU is slow and its gradients underflow);
- ``fp64``: the model's parameters and floating inputs are float64, for exactness checks.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from omnibind.errors import ConfigError
from omnibind.registry import nearest

DEVICES = ("auto", "cpu", "cuda", "cuda:N", "mps")
PRECISIONS = ("fp32", "bf16", "fp16", "fp64")


def check_precision_name(name: str) -> None:
    """Refuse a ``train.precision`` that is not ``fp32 | bf16 | fp16 | fp64``."""
    if name not in PRECISIONS:
        raise ConfigError(
            f"train.precision must be one of {', '.join(PRECISIONS)}, got {name!r}"
            f"{nearest(name, list(PRECISIONS))}"
        )


def check_device_spec(spec: str) -> None:
    """Refuse a ``train.device`` that is not ``auto | cpu | cuda | cuda:N | mps`` (without probing)."""
    base, _, index = spec.partition(":")
    if base == "cuda" and (not index or index.isdigit()):
        return
    if spec in ("auto", "cpu", "mps"):
        return
    raise ConfigError(
        f"train.device must be one of {', '.join(DEVICES)}, got {spec!r}{nearest(spec, list(DEVICES))}"
    )


def resolve_device(spec: str = "auto") -> torch.device:
    """The ``torch.device`` of ``spec``; a device this machine lacks is a ``ConfigError`` saying so."""
    check_device_spec(spec)
    if spec == "auto":
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise ConfigError("train.device is 'mps', but this machine has no usable Apple GPU; use cpu")
        return torch.device("mps")
    if not torch.cuda.is_available():
        raise ConfigError(
            f"train.device is {spec!r}, but this PyTorch sees no CUDA device "
            f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'no'}); use cpu or auto"
        )
    device = torch.device(spec)
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise ConfigError(f"train.device is {spec!r}, but this machine has {count} CUDA device(s): cuda:0..")
    return device


@dataclass(frozen=True)
class Precision:
    """How the training step of ``precision`` runs on ``device``.

    Attributes:
        name: ``fp32``, ``bf16``, ``fp16`` or ``fp64``.
        device: where the step runs.
    """

    name: str
    device: torch.device

    def __post_init__(self) -> None:
        check_precision_name(self.name)
        if self.name == "fp16" and self.device.type != "cuda":
            raise ConfigError(
                f"train.precision fp16 needs a CUDA device (here: {self.device.type}); on the CPU use bf16, "
                "whose range needs no loss scaling, or fp32"
            )
        if self.name == "fp64" and self.device.type == "mps":
            raise ConfigError("train.precision fp64: Apple GPUs have no float64; use cpu or cuda")

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the parameters and of every loss: float64 for ``fp64``, else float32 (autocast
        runs the encoders in half precision; their embeddings are cast back before the objective)."""
        return torch.float64 if self.name == "fp64" else torch.float32

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        """The context the encoders run in (autocast for ``bf16``/``fp16``, nothing otherwise)."""
        if self.name in ("bf16", "fp16"):
            dtype = torch.bfloat16 if self.name == "bf16" else torch.float16
            with torch.autocast(device_type=self.device.type, dtype=dtype):
                yield
        else:
            yield

    def grad_scaler(self) -> Any:
        """A ``torch.amp.GradScaler`` for ``fp16``; ``None`` otherwise."""
        if self.name != "fp16":
            return None
        return torch.amp.GradScaler(self.device.type)
