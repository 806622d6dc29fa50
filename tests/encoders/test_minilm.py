"""The packaged all-MiniLM-L6-v2 backbone, loaded offline (about 5 s per load)."""

from __future__ import annotations

import pytest
import torch

from omnibind.encoders import create_encoder
from omnibind.encoders.pretrained.sentence_transformers import MiniLMEncoder
from omnibind.errors import ConfigError

TEXTS = ["a red circle", "a small blue square", "a red circle"]


@pytest.fixture(scope="module")
def frozen() -> MiniLMEncoder:
    enc = create_encoder("minilm", ())
    assert isinstance(enc, MiniLMEncoder)
    return enc


def test_loads_offline_and_gives_384_unit_vectors(frozen: MiniLMEncoder) -> None:
    out = frozen(TEXTS)
    assert frozen.output_dim == 384 and out.shape == (3, 384)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(3))
    assert torch.equal(out[0], out[2])
    assert (out[0] @ out[1]) > 0.3  # related captions are close, as in the real model


def test_cache_encodes_each_text_once(frozen: MiniLMEncoder) -> None:
    frozen.clear_cache()
    before = frozen.encoded
    first = frozen(TEXTS)
    assert frozen.encoded - before == 2  # the repeated text is encoded once
    second = frozen(["a small blue square", "a red circle"])
    assert frozen.encoded - before == 2
    torch.testing.assert_close(second, first[[1, 0]], atol=0, rtol=0)
    frozen.clear_cache()
    with torch.no_grad():
        uncached = frozen._embed(TEXTS)
    torch.testing.assert_close(first, uncached, atol=1e-6, rtol=0)  # the cache is transparent


def test_frozen_backbone_is_not_trained_nor_saved(frozen: MiniLMEncoder) -> None:
    assert list(frozen.parameters()) == []
    assert frozen.state_dict() == {}
    assert not any(p.requires_grad for p in frozen.backbone.parameters())
    frozen.train()
    assert not frozen.backbone.training
    assert not frozen(["a green triangle"]).requires_grad


def test_unfrozen_backbone_trains_and_is_saved() -> None:
    enc = create_encoder("minilm", (), freeze=False, batch_size=2)
    trainable = [p for p in enc.parameters() if p.requires_grad]
    assert len(trainable) > 50
    assert any(k.startswith("backbone.") for k in enc.state_dict())
    enc.train()
    out = enc(TEXTS)
    out.sum().backward()
    assert all(p.grad is not None for p in enc.backbone[0].auto_model.encoder.layer[-1].parameters())
    assert enc.encoded == 3  # no cache when the backbone trains


def test_unfreeze_last_trains_only_the_last_layer() -> None:
    enc = create_encoder("minilm", (), unfreeze_last=1)
    names = {n for n, p in enc.named_parameters() if p.requires_grad}
    assert names and all(".layer.5." in n for n in names)


def test_sentence_transformers_needs_a_path() -> None:
    with pytest.raises(ConfigError, match="needs 'path'"):
        create_encoder("sentence_transformers", ())
    with pytest.raises(ConfigError, match="does not exist"):
        create_encoder("sentence_transformers", (), path="/nonexistent/model")
