"""Balance policies: modality dropout never empties an item; the hooks see per-modality predictions."""

from __future__ import annotations

import pytest
import torch

from omnibind.fusion import create_head
from omnibind.training.balance import BalancePolicy, ModalityDropout, StepContext, drop_modalities


def test_dropout_keeps_a_present_modality_of_every_item_and_never_adds_one() -> None:
    gen = torch.Generator().manual_seed(0)
    present = torch.rand(2000, 4, generator=gen) < 0.6
    present[0] = False  # an item with nothing stays empty, and nothing breaks
    for p in (0.0, 0.3, 0.9, 0.99):
        kept = drop_modalities(present, p, gen)
        assert not (kept & ~present).any()
        assert torch.equal(kept.any(dim=1), present.any(dim=1))
    kept = drop_modalities(torch.ones(20000, 2, dtype=torch.bool), 0.3, gen)
    # Per entry: kept with prob 0.7, plus the rescue of rows that lost both (0.09, half to each column).
    assert abs(float(kept.float().mean()) - (0.7 + 0.09 / 2)) < 0.01


def test_dropout_is_seeded_and_validated() -> None:
    present = torch.ones(50, 3, dtype=torch.bool)
    a = ModalityDropout(0.5).mask(present, torch.Generator().manual_seed(1))
    b = ModalityDropout(0.5).mask(present, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    with pytest.raises(ValueError):
        ModalityDropout(1.0)


def test_context_gives_unimodal_logits_by_masking() -> None:
    head = create_head("late", ("a", "b"), 4, 3).eval()
    z = {"a": torch.randn(5, 4), "b": torch.randn(5, 4)}
    present = torch.ones(5, 2, dtype=torch.bool)
    ctx = StepContext(0, z, present, torch.zeros(5, dtype=torch.long), head, lambda lg, y: lg.sum(1), {})
    only_a = head(z, torch.tensor([[True, False]] * 5)).logits
    assert torch.equal(ctx.logits_of(["a"]), only_a)
    BalancePolicy().after_backward(ctx)  # the base hooks do nothing
