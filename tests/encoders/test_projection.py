"""Projection heads."""

from __future__ import annotations

import torch

from omnibind.encoders import Projection


def test_linear_projection() -> None:
    proj = Projection(8, 4)
    assert isinstance(proj.net, torch.nn.Linear) and proj.net.bias is None
    assert proj(torch.randn(3, 8)).shape == (3, 4)


def test_mlp_projection() -> None:
    proj = Projection(8, 4, hidden=16, bias=True)
    assert proj(torch.randn(3, 8)).shape == (3, 4)
    assert sum(p.numel() for p in proj.parameters()) == 8 * 16 + 16 + 16 * 4 + 4
