"""freeze, unfreeze_last, lora."""

from __future__ import annotations

import importlib.util

import pytest
from torch import nn

from omnibind.encoders.adapt import blocks, freeze, lora, unfreeze_last
from omnibind.errors import OmnibindError


def _net() -> nn.Module:
    net = nn.Module()
    net.embed = nn.Linear(2, 4)
    net.layers = nn.ModuleList([nn.Linear(4, 4) for _ in range(3)])
    net.head = nn.ModuleList([nn.Linear(4, 4)])
    return net


def test_freeze_then_unfreeze_last() -> None:
    net = unfreeze_last(freeze(_net()), 2)
    trainable = {n for n, p in net.named_parameters() if p.requires_grad}
    assert trainable == {"layers.1.weight", "layers.1.bias", "layers.2.weight", "layers.2.bias"}


def test_blocks_is_the_longest_module_list_or_the_children() -> None:
    net = _net()
    assert blocks(net) == list(net.layers)
    seq = nn.Sequential(nn.Linear(1, 1), nn.ReLU())
    assert blocks(seq) == list(seq)


def test_unfreeze_more_than_there_is_and_zero() -> None:
    net = unfreeze_last(freeze(_net()), 10)
    assert all(p.requires_grad for p in net.layers.parameters())
    assert not any(p.requires_grad for p in unfreeze_last(freeze(_net()), 0).parameters())


@pytest.mark.skipif(importlib.util.find_spec("peft") is not None, reason="peft is installed")
def test_lora_without_peft_says_what_to_install() -> None:
    with pytest.raises(OmnibindError, match="pip install peft"):
        lora(_net(), 4, ["layers.0"])


class _Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(4, 2, batch_first=True)
        self.c_fc = nn.Linear(4, 8)
        self.c_proj = nn.Linear(8, 4)

    def forward(self, x):
        x = x + self.attn(x, x, x, need_weights=False)[0]
        return x + self.c_proj(self.c_fc(x).relu())


def test_lora_refuses_multihead_attention_and_adapts_the_mlp() -> None:
    pytest.importorskip("peft")
    import torch

    with pytest.raises(OmnibindError, match=r"out_proj of nn.MultiheadAttention.*c_fc, c_proj"):
        lora(_Block(), 2, ["out_proj"], owner="encoder 'x'")
    with pytest.raises(OmnibindError, match=r"encoder 'x': lora_targets \['qkv'\] match no nn.Linear.*c_fc"):
        lora(_Block(), 2, ["qkv"], owner="encoder 'x'")
    block = lora(_Block(), 2, ["c_fc", "c_proj"])
    block(torch.randn(2, 3, 4)).square().sum().backward()
    trainable = {n for n, p in block.named_parameters() if p.requires_grad}
    assert len(trainable) == 4 and all("lora_" in n for n in trainable)
    assert all(p.grad is not None for n, p in block.named_parameters() if n in trainable)
    assert all(p.grad is None for n, p in block.named_parameters() if n not in trainable)
