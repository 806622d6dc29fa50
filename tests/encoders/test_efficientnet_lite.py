"""The built-in EfficientNet-Lite0 image tower: packaged ImageNet weights, frozen by default, partial
unfreezing, checkpoint files (and ones that do not fit), ``model.save_backbones``, and its features on
the real emoji images."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from omnibind.config import config_from_dict
from omnibind.encoders import create_encoder
from omnibind.errors import ConfigError
from omnibind.model import BACKBONES_NAME, OmniModel

pytest.importorskip("efficientnet_lite_pytorch")


def _random_checkpoint(path: Path, seed: int = 0) -> Path:
    from efficientnet_lite_pytorch import EfficientNet

    torch.manual_seed(seed)
    net = EfficientNet.from_name("efficientnet-lite0")
    for m in net.modules():  # running statistics away from 0 / 1, so that they must be restored too
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 2.0)
    torch.save(net.state_dict(), path)
    return path


def test_frozen_by_default_with_the_packaged_weights() -> None:
    enc = create_encoder("efficientnet_lite0", (3, 64, 64), size=64)
    assert enc.frozen and enc.state_dict() == {} and list(enc.parameters()) == []
    out = enc(torch.rand(2, 3, 64, 64) * 2 - 1)
    assert out.shape == (2, 1280) and not out.requires_grad
    gray = create_encoder("efficientnet_lite0", (1, 40, 40), size=32)
    assert gray(torch.zeros(3, 1, 40, 40)).shape == (3, 1280)


def test_unfreeze_last_trains_those_blocks_and_the_head_only() -> None:
    enc = create_encoder("efficientnet_lite0", (3, 32, 32), checkpoint="none", size=32, unfreeze_last=2)
    enc.train()
    enc(torch.randn(2, 3, 32, 32)).sum().backward()
    trainable = {n for n, p in enc.named_parameters() if p.requires_grad}
    assert trainable and all(
        n.startswith(("backbone.blocks.14.", "backbone.blocks.15.", "backbone.head.")) for n in trainable
    )
    assert all(p.grad is not None for n, p in enc.named_parameters() if n in trainable)
    assert all(p.grad is None for n, p in enc.named_parameters() if n not in trainable)
    bn = [m for m in enc.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bn and not any(m.training for m in bn)  # ImageNet statistics, never the batch's


def test_a_checkpoint_file_is_used(tmp_path: Path) -> None:
    ckpt = _random_checkpoint(tmp_path / "lite0.pth")
    a = create_encoder("efficientnet_lite0", (3, 32, 32), checkpoint=str(ckpt), size=32)
    b = create_encoder("efficientnet_lite0", (3, 32, 32), size=32)
    x = torch.randn(2, 3, 32, 32)
    assert not torch.allclose(a(x), b(x))


def test_a_checkpoint_that_does_not_fit_names_the_keys(tmp_path: Path) -> None:
    state = torch.load(_random_checkpoint(tmp_path / "lite0.pth"), weights_only=True)
    state.pop("_conv_stem.weight")
    state["_bn0.weight"] = torch.ones(7)
    state["extra.weight"] = torch.ones(1)
    torch.save({"state_dict": state}, tmp_path / "bad.pth")
    with pytest.raises(ConfigError) as err:
        create_encoder("efficientnet_lite0", (3, 32, 32), checkpoint=str(tmp_path / "bad.pth"))
    message = str(err.value)
    assert "encoder 'efficientnet_lite0'" in message and "does not fit" in message
    assert "missing keys (1): _conv_stem.weight" in message
    assert "unexpected keys (1): extra.weight" in message
    assert "shape mismatch (1): _bn0.weight [7] (model: [32])" in message
    with pytest.raises(ConfigError, match="checkpoint '.*nowhere.pth' does not exist"):
        create_encoder("efficientnet_lite0", (3, 32, 32), checkpoint=str(tmp_path / "nowhere.pth"))


def _model(ckpt: Path, save_backbones: bool, unfreeze_last: int = 0) -> OmniModel:
    encoder = {
        "name": "efficientnet_lite0",
        "checkpoint": str(ckpt),
        "size": 32,
        "unfreeze_last": unfreeze_last,
    }
    cfg = config_from_dict(
        {
            "modalities": {
                "image": {"kind": "image", "size": 32, "encoder": encoder},
                "text": {"kind": "text"},
            },
            "data": {"source": "builtin:shapes?n=10"},
            "model": {"dim": 8, "save_backbones": save_backbones},
        }
    )
    torch.manual_seed(0)
    return OmniModel(cfg).eval()


@pytest.mark.parametrize("unfreeze_last", [0, 1])
def test_save_backbones_loads_without_the_checkpoint(tmp_path: Path, unfreeze_last: int) -> None:
    ckpt = _random_checkpoint(tmp_path / "lite0.pth")
    model = _model(ckpt, save_backbones=True, unfreeze_last=unfreeze_last)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        before = model.encode_modality("image", x)
    folder = model.save(tmp_path / "model")
    assert (folder / BACKBONES_NAME).is_file()
    ckpt.unlink()
    loaded = OmniModel.load(folder)
    with torch.no_grad():
        assert torch.equal(loaded.encode_modality("image", x), before)


def test_without_save_backbones_the_checkpoint_is_needed(tmp_path: Path) -> None:
    ckpt = _random_checkpoint(tmp_path / "lite0.pth")
    folder = _model(ckpt, save_backbones=False).save(tmp_path / "model")
    assert not (folder / BACKBONES_NAME).exists()
    ckpt.unlink()
    with pytest.raises(ConfigError, match="does not exist"):
        OmniModel.load(folder)


@pytest.mark.slow
def test_pooled_features_beat_raw_pixels_on_emoji_subgroups() -> None:
    """1-NN subgroup accuracy, test emoji against train emoji (cosine): 0.568 at size 128, pixels 0.479."""
    import json

    import numpy as np
    import torch.nn.functional as F

    from tests.helpers import shared_data

    root = shared_data("emoji_text")
    with np.load(root / "images.npz") as z:
        images = torch.from_numpy(z["images"]).permute(0, 3, 1, 2).float() / 127.5 - 1  # [N, 3, 64, 64]
    rows = [json.loads(line) for line in (root / "captions.jsonl").read_text().splitlines()]
    subgroup = np.array([r["subgroup"] for r in rows])
    train = np.array([r["split"] == "train" for r in rows])
    test = np.array([r["split"] == "test" for r in rows])

    def one_nn(features: torch.Tensor) -> float:
        f = F.normalize(features.flatten(1), dim=1)
        nearest = (f[test] @ f[train].T).argmax(1).numpy()
        return float((subgroup[train][nearest] == subgroup[test]).mean())

    enc = create_encoder("efficientnet_lite0", (3, 64, 64))
    with torch.no_grad():
        features = torch.cat([enc(images[i : i + 128]) for i in range(0, len(images), 128)])
    pooled, pixels = one_nn(features), one_nn(images)
    assert pooled == pytest.approx(0.568, abs=0.02) and pixels == pytest.approx(0.479, abs=0.01)
