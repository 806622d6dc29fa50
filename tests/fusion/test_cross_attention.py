"""Attention fusion and its building blocks: the mask, and the head's independence of absent tokens."""

from __future__ import annotations

import torch

from omnibind.fusion.cross_attention import AttentionFusion, TokenBlock, attention_mask


def test_mask_hides_absent_keys_but_never_a_whole_row() -> None:
    mask = attention_mask(torch.tensor([[True, False, True], [False, False, False]]))
    assert mask.shape == (2, 1, 3, 3)
    assert mask[0, 0, 0].tolist() == [True, False, True]
    assert mask[0, 0, 1].tolist() == [True, True, True]  # an absent token may read others and itself
    assert mask.any(dim=-1).all()


def test_expert_block_routes_each_token_to_its_own_network() -> None:
    torch.manual_seed(0)
    block = TokenBlock(8, 2, ffn_experts=3, dropout=0.0)
    x = torch.randn(2, 3, 8, requires_grad=True)
    out = block(x, attention_mask(torch.tensor([[True, True, False], [True, True, False]])))
    out[:, 0].sum().backward()
    # Token 0's output uses expert 0 only, never expert 1 or 2.
    assert block.ffn[0][0].weight.grad is not None and block.ffn[0][0].weight.grad.abs().sum() > 0
    for other in (1, 2):
        grad = block.ffn[other][0].weight.grad
        assert grad is None or float(grad.abs().sum()) == 0.0


def test_cls_reads_only_present_modalities() -> None:
    torch.manual_seed(0)
    head = AttentionFusion(("a", "b"), dim=4, num_classes=2, width=8, depth=2).eval()
    z = {"a": torch.randn(1, 4), "b": torch.randn(1, 4)}
    only_a = torch.tensor([[True, False]])
    ref = head(z, only_a).logits
    z["b"] = torch.randn(1, 4)
    assert torch.equal(head(z, only_a).logits, ref)
    assert not torch.equal(head(z, torch.tensor([[True, True]])).logits, ref)
