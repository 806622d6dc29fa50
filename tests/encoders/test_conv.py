"""The conv2d and conv1d encoders."""

from __future__ import annotations

import torch

from omnibind.encoders import create_encoder


def test_conv2d_output_width_and_audio_shapes() -> None:
    enc = create_encoder("conv2d", (1, 64, 101), width=8, depth=4)
    assert enc.output_dim == 64
    assert enc(torch.randn(2, 1, 64, 101)).shape == (2, 64)


def test_conv1d_long_multichannel_signal() -> None:
    enc = create_encoder("conv1d", (12, 5000))
    assert enc.output_dim == 128
    assert enc(torch.randn(2, 12, 5000)).shape == (2, 128)


def test_no_batch_norm_anywhere() -> None:
    for name, shape in [("conv2d", (3, 8, 8)), ("conv1d", (2, 16)), ("mlp", (4,))]:
        enc = create_encoder(name, shape)
        assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in enc.modules())
