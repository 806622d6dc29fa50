"""Raw-waveform audio through ``hf``: tiny random wav2vec2 and HuBERT backbones on the audio kind's
``features: waveform`` path, frozen, partly unfrozen and with LoRA; the spectrogram path is unchanged."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from omnibind.config import config_from_dict
from omnibind.data.kinds import create_kind
from omnibind.encoders import create_encoder
from omnibind.errors import ConfigError
from omnibind.model import OmniModel

TINY = {
    "hidden_size": 16,
    "num_hidden_layers": 3,
    "num_attention_heads": 2,
    "intermediate_size": 32,
    "conv_dim": [8, 8],
    "conv_kernel": [10, 3],
    "conv_stride": [5, 2],
    "num_conv_pos_embeddings": 16,
    "num_conv_pos_embedding_groups": 2,
    "hidden_dropout": 0.0,
    "attention_dropout": 0.0,
    "activation_dropout": 0.0,
    "feat_proj_dropout": 0.0,
    "layerdrop": 0.0,
}
SHAPE = (1, 1600)  # 0.1 s at 16 kHz


def _trainable_and_grads(enc: Any, x: torch.Tensor) -> tuple[set[str], list[str]]:
    enc.train()
    enc(x).square().sum().backward()
    trainable = {n for n, p in enc.named_parameters() if p.requires_grad}
    stray = [n for n, p in enc.named_parameters() if (p.grad is not None) != (n in trainable)]
    return trainable, stray


@pytest.mark.parametrize("model_type", ["wav2vec2", "hubert"])
def test_waveform_backbone_shapes_and_frozen(model_type: str) -> None:
    enc = create_encoder("hf", SHAPE, config={"model_type": model_type, **TINY})
    assert enc.frozen and enc.state_dict() == {}
    out = enc(torch.randn(3, *SHAPE))
    assert out.shape == (3, 16) and not out.requires_grad
    with torch.no_grad():
        alone = enc(torch.randn(3, *SHAPE)[:1])
    assert alone.shape == (1, 16)


def test_waveform_unfreeze_last_and_lora_train_only_their_parameters() -> None:
    config = {"model_type": "wav2vec2", **TINY}
    x = torch.randn(2, *SHAPE)
    trainable, stray = _trainable_and_grads(create_encoder("hf", SHAPE, config=config, unfreeze_last=1), x)
    assert trainable and all(".layers.2." in n for n in trainable) and not stray
    pytest.importorskip("peft")
    trainable, stray = _trainable_and_grads(create_encoder("hf", SHAPE, config=config, lora_rank=2), x)
    assert len(trainable) == 3 * 2 * 2 and all("lora_" in n for n in trainable) and not stray
    full, stray = _trainable_and_grads(create_encoder("hf", SHAPE, config=config, freeze=False), x)
    assert full and not stray  # the SpecAugment mask embedding is gone: every parameter gets a gradient


def test_waveform_rows_are_standardised_per_clip() -> None:
    enc = create_encoder("hf", SHAPE, config={"model_type": "wav2vec2", **TINY})
    x = torch.randn(2, *SHAPE)
    with torch.no_grad():
        torch.testing.assert_close(enc(x), enc(3 * x + 0.5), atol=1e-4, rtol=1e-4)


def test_waveform_backbone_refuses_a_spectrogram() -> None:
    with pytest.raises(ConfigError, match=r"\[1, samples\].*features: waveform"):
        create_encoder("hf", (1, 64, 32), config={"model_type": "wav2vec2", **TINY})


def test_audio_kind_waveform_features() -> None:
    kind = create_kind("audio", {"features": "waveform", "seconds": 0.1})
    assert kind.input_shape() == SHAPE and kind.default_encoder == "conv1d"
    wave = np.sin(np.linspace(0, 100, 1000, dtype=np.float32))
    x = kind.prepare(wave, None)
    assert (
        x.shape == SHAPE and torch.equal(x[0, :1000], torch.from_numpy(wave)) and x[0, 1000:].abs().sum() == 0
    )
    spectrogram = create_kind("audio", {"seconds": 0.1})
    assert spectrogram.input_shape()[:2] == (1, 64) and spectrogram.default_encoder == "conv2d"
    with pytest.raises(ValueError, match="features must be one of log_mel, waveform"):
        create_kind("audio", {"features": "mfcc"})


def test_model_with_a_waveform_tower_saves_and_loads(tmp_path: Path) -> None:
    encoder = {"name": "hf", "config": {"model_type": "hubert", **TINY}, "freeze": False}
    cfg = config_from_dict(
        {
            "modalities": {
                "sound": {"kind": "audio", "features": "waveform", "seconds": 0.1, "encoder": encoder},
                "text": {"kind": "text"},
            },
            "data": {"source": "builtin:shapes?n=10"},
            "model": {"dim": 8},
        }
    )
    torch.manual_seed(0)
    model = OmniModel(cfg).eval()
    x = torch.randn(2, *SHAPE)
    with torch.no_grad():
        before = model.encode_modality("sound", x)
    loaded = OmniModel.load(model.save(tmp_path / "model"))
    with torch.no_grad():
        assert torch.equal(loaded.encode_modality("sound", x), before)
