"""LoRA through peft on the ``hf`` encoder (a tiny random BERT): only the adapters train, the counts are
reported, the model saves and loads bit-identically, and a target that matches nothing is refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from omnibind.config import config_from_dict
from omnibind.encoders import create_encoder
from omnibind.errors import ConfigError
from omnibind.model import OmniModel

pytest.importorskip("peft")

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "red", "blue", "circle", "square", "##s"]
TEXTS = ["a red circle", "blue squares", "a blue circle"]


@pytest.fixture(scope="module")
def bert(tmp_path_factory: pytest.TempPathFactory) -> str:
    from transformers import AutoConfig, AutoModel, BertTokenizer

    folder = tmp_path_factory.mktemp("bert")
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    BertTokenizer(str(folder / "vocab.txt")).save_pretrained(folder)
    config = AutoConfig.for_model(
        "bert",
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        vocab_size=len(VOCAB),
        max_position_embeddings=32,
    )
    torch.manual_seed(0)
    AutoModel.from_config(config).save_pretrained(folder)
    return str(folder)


def test_only_the_adapters_get_gradients(bert: str) -> None:
    enc = create_encoder("hf", (), path=bert, lora_rank=2, max_tokens=8)
    enc.train()
    enc(TEXTS).square().sum().backward()
    trainable = {n for n, p in enc.named_parameters() if p.requires_grad}
    # BERT's query and value projections of both layers, an A and a B matrix each
    assert len(trainable) == 2 * 2 * 2 and all("lora_" in n for n in trainable)
    assert all(p.grad is not None for n, p in enc.named_parameters() if n in trainable)
    assert all(p.grad is None for n, p in enc.named_parameters() if n not in trainable)


def test_a_target_that_matches_no_layer_names_the_linear_layers(bert: str) -> None:
    with pytest.raises(ConfigError, match=r"encoder 'hf': lora_targets \['qkv'\] match no nn.Linear.*query"):
        create_encoder("hf", (), path=bert, lora_rank=2, lora_targets=("qkv",))


def _config(bert: str, tmp: Path) -> dict:
    (tmp / "items.jsonl").write_text(
        "".join(f'{{"id": "{i}", "text": "{t}", "other": "{t}"}}\n' for i, t in enumerate(TEXTS * 4))
    )
    encoder = {"name": "hf", "path": bert, "lora_rank": 2, "max_tokens": 8}
    return {
        "modalities": {"text": {"kind": "text", "encoder": encoder}, "other": {"kind": "text"}},
        "data": {"source": str(tmp / "items.jsonl")},
        "model": {"dim": 8},
        "objective": {"name": "infonce"},
    }


def test_lora_model_counts_saves_and_loads_bit_identically(bert: str, tmp_path: Path) -> None:
    cfg = config_from_dict(_config(bert, tmp_path))
    torch.manual_seed(1)
    model = OmniModel(cfg)
    trainable, total = model.parameter_counts()["text"]
    adapters = sum(p.numel() for n, p in model.encoders["text"].named_parameters() if "lora_" in n)
    assert trainable == adapters + 16 * 8 and total > 10 * trainable  # adapters + the projection
    with torch.no_grad():  # move the adapters away from their zero start, so the check means something
        for name, p in model.encoders["text"].named_parameters():
            if "lora_B" in name:
                p.normal_()
    model.eval()
    before = model.embed(TEXTS, "text")
    loaded = OmniModel.load(model.save(tmp_path / "model"))
    assert torch.equal(loaded.embed(TEXTS, "text"), before)
    assert any("lora_B" in k for k in loaded.state_dict())


def test_trainer_prints_the_parameter_counts(bert: str, tmp_path: Path, capsys) -> None:
    from omnibind.training.trainer import parameter_line

    model = OmniModel(config_from_dict(_config(bert, tmp_path)))
    trainable, total = model.parameter_counts()["text"]
    assert f"text {trainable:,} / {total:,}" in parameter_line(model)
