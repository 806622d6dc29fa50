"""create_encoder, list_encoders and the frozen-backbone convention of Encoder."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from omnibind.encoders import Encoder, create_encoder, list_encoders
from omnibind.errors import ConfigError


def test_list_encoders_has_the_builtins() -> None:
    names = list_encoders()
    for name in ["conv1d", "conv2d", "mlp", "linear", "bag_of_tokens", "transformer", "minilm", "hf"]:
        assert name in names


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(KeyError, match="did you mean 'conv2d'"):
        create_encoder("conv2", (3, 8, 8))


def test_unknown_option_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="no option 'widht'.*did you mean 'width'"):
        create_encoder("conv2d", (3, 8, 8), widht=8)


def test_wrong_input_shape_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"conv2d.*\[C, H, W\].*\[3, 8\]"):
        create_encoder("conv2d", (3, 8))
    with pytest.raises(ConfigError, match="text"):
        create_encoder("bag_of_tokens", (4,))


class _Held(Encoder):
    kinds = ("embedding",)

    def __init__(self, input_shape: tuple[int, ...] = (3,)) -> None:
        super().__init__()
        self.hold_frozen("backbone", nn.Linear(3, 4))
        self.head = nn.Linear(4, 2)
        self.output_dim = 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def test_held_backbone_is_not_saved_not_trained_but_moves() -> None:
    enc = _Held()
    assert set(enc.state_dict()) == {"head.weight", "head.bias"}
    assert all(p.requires_grad for p in enc.parameters())
    assert not any(p.requires_grad for p in enc.backbone.parameters())
    enc.train()
    assert not enc.backbone.training
    enc.double()
    assert enc.backbone.weight.dtype == torch.float64
    assert enc(torch.zeros(2, 3, dtype=torch.float64)).shape == (2, 2)
