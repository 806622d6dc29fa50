"""Shared by the backbone tests: tiny open_clip configs and a skip for libraries that do not import."""

from __future__ import annotations

import importlib
from typing import Any

import pytest

TINY_CLIP: dict[str, Any] = {
    "embed_dim": 8,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 16, "head_width": 8, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 2},
}


def importorskip_backbone(module: str) -> Any:
    """Import ``module`` or skip: absent, or present but failing (timm and open_clip import torchvision,
    whose PyPI build does not import beside a CPU build of torch)."""
    try:
        return importlib.import_module(module)
    except Exception as exc:  # noqa: BLE001 - torchvision's failure is a RuntimeError
        pytest.skip(f"{module} does not import here: {type(exc).__name__}: {exc}", allow_module_level=True)
