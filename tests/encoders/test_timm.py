"""The ``timm`` image tower on tiny random models (``pretrained=False``): shapes, frozen / unfreeze_last /
LoRA gradients, local checkpoints (and ones that do not fit), ``model.save_backbones``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from omnibind.config import config_from_dict
from omnibind.encoders import create_encoder
from omnibind.errors import ConfigError
from omnibind.model import BACKBONES_NAME, OmniModel
from tests.encoders.backbones import importorskip_backbone

timm = importorskip_backbone("timm")
VIT = {"model": "vit_tiny_patch16_224", "model_options": {"img_size": 32, "patch_size": 8, "depth": 2}}


def _grads(enc, x) -> tuple[set[str], list[str]]:
    enc.train()
    enc(x).square().sum().backward()
    trainable = {n for n, p in enc.named_parameters() if p.requires_grad}
    return trainable, [n for n, p in enc.named_parameters() if (p.grad is not None) != (n in trainable)]


def test_frozen_cnn_and_vit_shapes() -> None:
    cnn = create_encoder("timm", (3, 32, 32), model="resnet10t", size=32)
    assert cnn.frozen and cnn.state_dict() == {}
    assert cnn(torch.randn(2, 3, 32, 32)).shape == (2, 512)
    vit = create_encoder("timm", (1, 20, 20), **VIT)
    assert vit(torch.randn(2, 1, 20, 20)).shape == (2, 192)


def test_unfreeze_last_and_lora_train_only_their_parameters() -> None:
    x = torch.randn(2, 3, 32, 32)
    trainable, stray = _grads(create_encoder("timm", (3, 32, 32), **VIT, unfreeze_last=1), x)
    assert trainable and all(n.startswith("backbone.blocks.1.") for n in trainable) and not stray
    pytest.importorskip("peft")
    trainable, stray = _grads(create_encoder("timm", (3, 32, 32), **VIT, lora_rank=2), x)
    assert len(trainable) == 2 * 2 and all("lora_" in n for n in trainable) and not stray
    with pytest.raises(ConfigError, match="match no nn.Linear"):
        create_encoder("timm", (3, 32, 32), model="resnet10t", lora_rank=2, lora_targets=("qkv",))


def _checkpoint(path: Path, model: str = "resnet10t", seed: int = 0) -> Path:
    torch.manual_seed(seed)
    torch.save(timm.create_model(model, pretrained=False).state_dict(), path)
    return path


def test_checkpoints_load_and_misfits_name_keys(tmp_path: Path) -> None:
    ckpt = _checkpoint(tmp_path / "r.pth")
    a = create_encoder("timm", (3, 32, 32), model="resnet10t", checkpoint=str(ckpt), size=32)
    b = create_encoder("timm", (3, 32, 32), model="resnet10t", size=32)
    x = torch.randn(2, 3, 32, 32)
    assert not torch.allclose(a(x), b(x))
    wrong = _checkpoint(tmp_path / "w.pth", model="resnet18")
    with pytest.raises(ConfigError, match=r"encoder 'timm' \(resnet10t\).*does not fit.*shape mismatch"):
        create_encoder("timm", (3, 32, 32), model="resnet10t", checkpoint=str(wrong))
    with pytest.raises(ConfigError, match="unknown model 'resnet10x'.*did you mean"):
        create_encoder("timm", (3, 32, 32), model="resnet10x")


def test_save_backbones_loads_without_the_checkpoint(tmp_path: Path) -> None:
    ckpt = _checkpoint(tmp_path / "r.pth")
    encoder = {"name": "timm", "model": "resnet10t", "checkpoint": str(ckpt), "size": 32}
    cfg = config_from_dict(
        {
            "modalities": {
                "image": {"kind": "image", "size": 32, "encoder": encoder},
                "text": {"kind": "text"},
            },
            "data": {"source": "builtin:shapes?n=10"},
            "model": {"dim": 8, "save_backbones": True},
        }
    )
    model = OmniModel(cfg).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        before = model.encode_modality("image", x)
    folder = model.save(tmp_path / "model")
    assert (folder / BACKBONES_NAME).is_file()
    ckpt.unlink()
    with torch.no_grad():
        assert torch.equal(OmniModel.load(folder).encode_modality("image", x), before)
