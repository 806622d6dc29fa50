"""Modality experts: each modality trains its own feed-forward weights, and only when it is present."""

from __future__ import annotations

import torch

from omnibind.fusion.experts import ModalityExperts


def test_an_absent_modality_trains_none_of_its_expert_weights() -> None:
    torch.manual_seed(0)
    head = ModalityExperts(("a", "b", "c"), dim=4, num_classes=2, width=8, depth=2, dropout=0.0)
    assert all(len(block.ffn) == 3 for block in head.blocks)
    z = {m: torch.randn(3, 4) for m in "abc"}
    present = torch.tensor([[1, 1, 0], [1, 0, 0], [0, 1, 0]], dtype=torch.bool)
    head(z, present).logits.sum().backward()
    for block in head.blocks:
        assert block.ffn[0][0].weight.grad.abs().sum() > 0
        assert block.ffn[1][0].weight.grad.abs().sum() > 0
        grad_c = block.ffn[2][0].weight.grad
        assert grad_c is None or float(grad_c.abs().sum()) == 0.0
