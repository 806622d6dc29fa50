"""Multi-positive InfoNCE (1-to-K): K = 1 is plain InfoNCE; several values against a direct formula."""

from __future__ import annotations

import math

import pytest
import torch

from omnibind.objectives import create_objective, infonce_loss
from omnibind.objectives.multi_positive import multi_positive_infonce_loss


def _unit(*shape: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(*shape, generator=gen, dtype=torch.float64), dim=-1)


@pytest.mark.parametrize("pairs", ["all", "a"])
def test_one_value_per_item_is_plain_infonce(pairs: str) -> None:
    x = _unit(3, 7, 8, seed=0)
    emb = {"a": x[0], "b": x[1], "c": x[2]}
    present = torch.ones(7, 3, dtype=torch.bool)
    present[0, 2] = present[3, 1] = False
    want = infonce_loss(emb, present, 10.0, pairs=pairs)
    got = multi_positive_infonce_loss(emb, present, 10.0, torch.arange(7), pairs=pairs)
    assert got.count == want.count and got.terms.keys() == want.terms.keys()
    assert torch.allclose(got.loss, want.loss, rtol=0, atol=1e-12)


def _direct(a: torch.Tensor, b: torch.Tensor, pa: list, pb: list, groups: list, s: float) -> float:
    """The ``a->b`` term written out: a loop over items, their queries and their positives."""
    with_a = {g for g, x in zip(groups, pa, strict=True) if x}
    items = sorted(with_a & {g for g, x in zip(groups, pb, strict=True) if x})
    per_item = []
    for g in items:
        queries = [q for q in range(len(groups)) if pa[q] and groups[q] == g]
        cands = [c for c in range(len(groups)) if pb[c] and groups[c] in items]
        losses = []
        for q in queries:
            pos = [c for c in cands if groups[c] == g]
            neg = [c for c in cands if groups[c] != g]
            terms = []
            for p in pos:
                denom = math.exp(s * float(a[q] @ b[p])) + sum(math.exp(s * float(a[q] @ b[n])) for n in neg)
                terms.append(math.log(denom) - s * float(a[q] @ b[p]))
            losses.append(sum(terms) / len(terms))
        per_item.append(sum(losses) / len(losses))
    return sum(per_item) / len(per_item)


def test_several_values_per_item_match_the_direct_formula() -> None:
    # items 0..4; rows 5..8 are further captions of items 0, 0, 2 and 4 (caption present only)
    groups = [0, 1, 2, 3, 4, 0, 0, 2, 4]
    image = _unit(9, 6, seed=1)
    caption = _unit(9, 6, seed=2)
    present = torch.tensor(
        [[1, 1], [1, 1], [1, 0], [0, 1], [1, 1], [0, 1], [0, 1], [0, 1], [0, 1]], dtype=torch.bool
    )
    image = torch.where(present[:, :1], image, 0.0)
    caption = torch.where(present[:, 1:], caption, 0.0)
    out = multi_positive_infonce_loss(
        {"image": image, "caption": caption}, present, 5.0, torch.tensor(groups)
    )
    pa, pb = present[:, 0].tolist(), present[:, 1].tolist()
    i2c = _direct(image, caption, pa, pb, groups, 5.0)
    c2i = _direct(caption, image, pb, pa, groups, 5.0)
    assert out.terms["image->caption"] == pytest.approx(i2c, rel=1e-12)
    assert out.terms["caption->image"] == pytest.approx(c2i, rel=1e-12)
    assert float(out.loss) == pytest.approx((i2c + c2i) / 2, rel=1e-12)


def test_infonce_module_takes_groups_and_gradients_reach_every_view() -> None:
    x = _unit(2, 6, 4, seed=3).requires_grad_(True)
    present = torch.tensor([[1, 1], [1, 1], [1, 1], [1, 1], [0, 1], [0, 1]], dtype=torch.bool)
    out = create_objective("infonce")(
        {"a": x[0], "b": x[1]}, present, torch.tensor(10.0), groups=torch.tensor([0, 1, 2, 3, 0, 1])
    )
    out.loss.backward()
    assert out.count == 2
    assert x.grad[1, 4].abs().sum() > 0 and x.grad[0, 4].abs().sum() == 0  # absent rows get no gradient
