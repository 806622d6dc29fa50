"""The transformers AutoModel wrapper, with tiny randomly initialised ViT, AST and BERT backbones."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import torch

from omnibind.encoders import create_encoder
from omnibind.errors import ConfigError

TINY = {"hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 32}
VIT = {"model_type": "vit", **TINY, "image_size": 32, "patch_size": 8}
AST = {
    "model_type": "audio-spectrogram-transformer",
    **TINY,
    "num_mel_bins": 16,
    "max_length": 32,
    "patch_size": 8,
    "frequency_stride": 8,
    "time_stride": 8,
}


def _grads(enc: Any, x: Any) -> list[str]:
    enc.train()
    enc(x).sum().backward()
    return [n for n, p in enc.named_parameters() if p.requires_grad and p.grad is None]


def test_vit_resizes_and_repeats_gray_images() -> None:
    enc = create_encoder("hf", (1, 20, 20), config=VIT)
    assert enc.output_dim == 16
    assert enc(torch.rand(3, 1, 20, 20) * 2 - 1).shape == (3, 16)


def test_vit_frozen_is_not_saved_and_unfrozen_trains() -> None:
    frozen = create_encoder("hf", (3, 32, 32), config=VIT)
    assert frozen.state_dict() == {} and list(frozen.parameters()) == []
    assert not frozen(torch.zeros(2, 3, 32, 32)).requires_grad
    for pooling in ("cls", "mean", "pooler"):
        enc = create_encoder("hf", (3, 32, 32), config=VIT, freeze=False, pooling=pooling)
        assert _grads(enc, torch.randn(2, 3, 32, 32)) == []


def test_vit_partial_unfreeze() -> None:
    enc = create_encoder("hf", (3, 32, 32), config=VIT, unfreeze_last=1)
    names = {n for n, p in enc.named_parameters() if p.requires_grad}
    # transformers 5 names ViT blocks "layers.N"; older versions "encoder.layer.N"
    assert names and all(re.match(r"backbone\.(encoder\.layer|layers)\.1\.", n) for n in names)
    assert _grads(enc, torch.randn(2, 3, 32, 32)) == []


def test_vit_from_a_folder_uses_its_normalisation(tmp_path: Path) -> None:
    from transformers import AutoConfig, AutoModel

    torch.manual_seed(0)
    model = AutoModel.from_config(AutoConfig.for_model(**VIT))
    model.save_pretrained(tmp_path)
    from_folder = create_encoder("hf", (3, 32, 32), path=str(tmp_path)).eval()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        expected = model.eval()(pixel_values=x).last_hidden_state.mean(1)  # default stats keep [-1, 1]
    torch.testing.assert_close(from_folder(x), expected)
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"image_mean": mean, "image_std": std}))
    renorm = create_encoder("hf", (3, 32, 32), path=str(tmp_path)).eval()
    pixels = ((x + 1) / 2 - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    with torch.no_grad():
        expected = model(pixel_values=pixels).last_hidden_state.mean(1)
    torch.testing.assert_close(renorm(x), expected)


def test_ast_takes_log_mel_and_pads_frames() -> None:
    enc = create_encoder("hf", (1, 16, 20), config=AST, freeze=False, pooling="pooler")
    assert enc(torch.randn(2, 1, 16, 20)).shape == (2, 16)
    assert _grads(enc, torch.randn(2, 1, 16, 20)) == []
    long = create_encoder("hf", (1, 16, 50), config=AST)
    assert long(torch.randn(2, 1, 16, 50)).shape == (2, 16)
    with pytest.raises(ConfigError, match="num_mel_bins|\\[1, 16, frames\\]"):
        create_encoder("hf", (1, 64, 20), config=AST)


def test_bert_text_with_a_wordpiece_vocab(tmp_path: Path) -> None:
    from transformers import AutoConfig, AutoModel, BertTokenizer

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "red", "blue", "circle", "square", "##s"]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizer(str(tmp_path / "vocab.txt")).save_pretrained(tmp_path)
    config = AutoConfig.for_model("bert", **TINY, vocab_size=len(vocab), max_position_embeddings=32)
    AutoModel.from_config(config).save_pretrained(tmp_path)
    enc = create_encoder("hf", (), path=str(tmp_path), freeze=False, max_tokens=8).eval()
    texts = ["a red circle", "blue squares", "a red circle a red circle a red circle"]
    out = enc(texts)
    assert out.shape == (3, 16)
    with torch.no_grad():
        alone = enc(texts[1:2])
    torch.testing.assert_close(alone[0], out[1].detach(), atol=1e-5, rtol=0)  # padding is masked out
    assert _grads(enc, texts) == []


def test_bad_options() -> None:
    with pytest.raises(ConfigError, match="'path'.*'config'"):
        create_encoder("hf", (3, 32, 32))
    with pytest.raises(ConfigError, match="pooling"):
        create_encoder("hf", (3, 32, 32), config=VIT, pooling="max")
    with pytest.raises(ConfigError, match="\\[C, H, W\\]"):
        create_encoder("hf", (), config=VIT)
    with pytest.raises(ConfigError, match="freeze=true"):
        create_encoder("hf", (3, 32, 32), config=VIT, freeze=False, unfreeze_last=1)
