"""Late fusion: presence bits tell "absent" from "a zero vector"; the imputation baselines cannot."""

from __future__ import annotations

import pytest
import torch

from omnibind.config import config_from_dict
from omnibind.errors import ConfigError
from omnibind.fusion.classifier import Classifier
from omnibind.fusion.late import LateFusion

MODS = ("image", "audio")


@pytest.mark.parametrize("impute", ["zeros", "zero-vectors"])
@pytest.mark.parametrize("pool", ["concat", "mean"])
def test_absent_differs_from_a_present_zero_vector_unless_imputing_zeros(pool: str, impute: str) -> None:
    z = {"image": torch.randn(1, 4), "audio": torch.zeros(1, 4)}
    absent = torch.tensor([[True, False]])
    both = torch.tensor([[True, True]])
    torch.manual_seed(0)
    aware = LateFusion(MODS, 4, 3, pool=pool).eval()
    assert not torch.allclose(aware(z, absent).logits, aware(z, both).logits)
    torch.manual_seed(0)
    zeros = LateFusion(MODS, 4, 3, pool=pool, impute=impute).eval()  # on its own: zero vectors
    assert torch.equal(zeros(z, absent).logits, zeros(z, both).logits)


def test_mean_pool_averages_the_present_embeddings_only() -> None:
    head = LateFusion(MODS, 4, 3, pool="mean").eval()
    z = {"image": torch.ones(1, 4), "audio": torch.full((1, 4), 5.0)}
    one = head(z, torch.tensor([[True, False]])).logits
    same = head({"image": torch.ones(1, 4), "audio": torch.ones(1, 4)}, torch.tensor([[True, False]])).logits
    assert torch.equal(one, same)


def test_bad_options() -> None:
    with pytest.raises(ConfigError, match="pool"):
        LateFusion(MODS, 4, 3, pool="max")
    with pytest.raises(ConfigError, match="impute"):
        LateFusion(MODS, 4, 3, impute="mean")


def _classifier(impute: str) -> Classifier:
    raw = {
        "modalities": {
            "image": {"kind": "image", "size": 8},
            "table": {"kind": "tabular", "columns": ["x", "y"]},
        },
        "data": {"source": "builtin:shapes?n=8"},
        "model": {"dim": 4},
        "task": {"label": "label", "head": "late", "head_options": {"impute": impute}, "classes": ["a", "b"]},
    }
    torch.manual_seed(0)
    return Classifier(config_from_dict(raw)).eval()  # no dropout: outputs compare exactly


def test_impute_zeros_runs_the_zero_input_through_the_encoder() -> None:
    """In a classifier, an absent slot holds the encoder's output for an all-zero input, with gradient."""
    model = _classifier("zeros")
    present = torch.tensor([[True, False], [True, True]])
    z = {"image": torch.randn(2, 4), "table": torch.randn(2, 4)}
    encoded = model.encoder.encode_zero_input("table")
    assert encoded.shape == (4,)
    expected = model.encoder.encode_modality("table", torch.zeros(1, 2))[0]
    assert torch.allclose(encoded, expected)
    filled = {"image": z["image"], "table": torch.stack([encoded.detach(), z["table"][1]])}
    out = model.head(z, present).logits
    assert torch.allclose(out, model.head(filled, torch.ones(2, 2, dtype=torch.bool)).logits)
    out.sum().backward()  # the zero input's embedding trains the table encoder
    grads = [p.grad for p in model.encoder.encoders["table"].parameters()]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)


def test_zero_vectors_ignore_the_encoder() -> None:
    model = _classifier("zero-vectors")
    z = {"image": torch.randn(1, 4), "table": torch.randn(1, 4)}
    absent = model.head(z, torch.tensor([[True, False]])).logits
    both = torch.ones(1, 2, dtype=torch.bool)
    zero = model.head({"image": z["image"], "table": torch.zeros(1, 4)}, both).logits
    assert torch.equal(absent, zero)
