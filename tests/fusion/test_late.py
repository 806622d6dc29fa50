"""Late fusion: presence bits tell "absent" from "a zero vector"; impute="zeros" (the baseline) cannot."""

from __future__ import annotations

import pytest
import torch

from omnibind.errors import ConfigError
from omnibind.fusion.late import LateFusion

MODS = ("image", "audio")


@pytest.mark.parametrize("pool", ["concat", "mean"])
def test_absent_differs_from_a_present_zero_vector_unless_imputing_zeros(pool: str) -> None:
    z = {"image": torch.randn(1, 4), "audio": torch.zeros(1, 4)}
    absent = torch.tensor([[True, False]])
    both = torch.tensor([[True, True]])
    torch.manual_seed(0)
    aware = LateFusion(MODS, 4, 3, pool=pool).eval()
    assert not torch.allclose(aware(z, absent).logits, aware(z, both).logits)
    torch.manual_seed(0)
    zeros = LateFusion(MODS, 4, 3, pool=pool, impute="zeros").eval()
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
