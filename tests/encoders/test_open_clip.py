"""The ``open_clip`` towers on a tiny random CLIP (no weights): image and text, frozen / unfreeze_last /
LoRA on the MLP (``nn.MultiheadAttention`` refused), a user's checkpoint, ``model.save_backbones``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from omnibind.config import config_from_dict
from omnibind.encoders import create_encoder
from omnibind.errors import ConfigError
from omnibind.model import BACKBONES_NAME, OmniModel
from tests.encoders.backbones import TINY_CLIP, importorskip_backbone

open_clip = importorskip_backbone("open_clip")
TEXTS = ["a red circle", "a blue square", ""]


def _grads(enc, x) -> tuple[set[str], list[str]]:
    enc.train()
    enc(x).square().sum().backward()
    trainable = {n for n, p in enc.named_parameters() if p.requires_grad}
    return trainable, [n for n, p in enc.named_parameters() if (p.grad is not None) != (n in trainable)]


@pytest.mark.parametrize("tower", ["image", "text"])
def test_towers_frozen_unfrozen_and_lora(tower: str) -> None:
    shape, x = ((3, 32, 32), torch.randn(3, 3, 32, 32)) if tower == "image" else ((), TEXTS)
    frozen = create_encoder("open_clip", shape, config=TINY_CLIP, tower=tower)
    assert frozen.state_dict() == {} and frozen(x).shape == (3, 8)
    trainable, stray = _grads(create_encoder("open_clip", shape, config=TINY_CLIP, freeze=False), x)
    assert trainable and not stray, stray
    trainable, stray = _grads(create_encoder("open_clip", shape, config=TINY_CLIP, unfreeze_last=1), x)
    assert trainable and all(".resblocks.1." in n for n in trainable) and not stray
    pytest.importorskip("peft")
    trainable, stray = _grads(create_encoder("open_clip", shape, config=TINY_CLIP, lora_rank=2), x)
    assert len(trainable) == 2 * 2 * 2 and all("lora_" in n for n in trainable) and not stray
    with pytest.raises(ConfigError, match="out_proj of nn.MultiheadAttention.*c_fc"):
        create_encoder("open_clip", shape, config=TINY_CLIP, lora_rank=2, lora_targets=("out_proj",))


def test_a_users_checkpoint_and_one_that_does_not_fit(tmp_path: Path) -> None:
    torch.manual_seed(0)
    clip = open_clip.CLIP(**TINY_CLIP)
    torch.save({"state_dict": clip.state_dict()}, tmp_path / "clip.pt")
    enc = create_encoder("open_clip", (3, 32, 32), config=TINY_CLIP, checkpoint=str(tmp_path / "clip.pt"))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = clip.eval().encode_image(((x + 1) / 2 - enc.mean) / enc.std)
    torch.testing.assert_close(enc(x), expected)
    bigger = {**TINY_CLIP, "embed_dim": 12}
    with pytest.raises(ConfigError, match="does not fit the model: shape mismatch"):
        create_encoder("open_clip", (), config=bigger, checkpoint=str(tmp_path / "clip.pt"))


def test_save_backbones_loads_without_the_checkpoint(tmp_path: Path) -> None:
    torch.manual_seed(0)
    torch.save(open_clip.CLIP(**TINY_CLIP).state_dict(), tmp_path / "clip.pt")
    enc = {"name": "open_clip", "config": TINY_CLIP, "checkpoint": str(tmp_path / "clip.pt")}
    cfg = config_from_dict(
        {
            "modalities": {
                "image": {"kind": "image", "size": 32, "encoder": {**enc, "tower": "image"}},
                "text": {"kind": "text", "encoder": {**enc, "tower": "text"}},
            },
            "data": {"source": "builtin:shapes?n=10"},
            "model": {"dim": 8, "save_backbones": True},
        }
    )
    model = OmniModel(cfg).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        before = model.encode_modality("image", x), model.encode_modality("text", TEXTS)
    folder = model.save(tmp_path / "model")
    assert (folder / BACKBONES_NAME).is_file()
    (tmp_path / "clip.pt").unlink()
    loaded = OmniModel.load(folder)
    with torch.no_grad():
        assert torch.equal(loaded.encode_modality("image", x), before[0])
        assert torch.equal(loaded.encode_modality("text", TEXTS), before[1])
