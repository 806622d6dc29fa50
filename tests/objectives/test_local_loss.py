"""``rows=`` (``objective.local_loss``): the local losses of a partition of the rows sum to the loss.

This is the property torchrun's local loss relies on; the 2-process training test checks the whole
path. Here the sum is checked directly, with its gradients, for every built-in objective, with a third
of the values missing.
"""

from __future__ import annotations

import pytest
import torch

from omnibind.objectives import create_objective

CASES = [
    ("infonce", {"pairs": "all"}),
    ("infonce", {"pairs": "a"}),
    ("siglip", {}),
    ("symile", {"negatives": "n"}),
    ("symile", {"negatives": "n2"}),
    ("infonce", {"matryoshka": {"dims": [4, 16]}}),
    ("symile", {"negatives": "n", "matryoshka": {"dims": [4, 16]}}),
]


def _inputs(n: int = 12, d: int = 16, seed: int = 0) -> tuple[dict, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.normalize(torch.randn(3, n, d, generator=g, dtype=torch.float64), dim=-1)
    present = torch.rand(n, 3, generator=g) > 0.33
    present[0] = True
    emb = {name: x[k].clone().requires_grad_(True) for k, name in enumerate("abc")}
    return emb, present


@pytest.mark.parametrize(("name", "options"), CASES, ids=[f"{n}-{o}" for n, o in CASES])
@pytest.mark.parametrize("parts", [2, 3])
def test_local_losses_sum_to_the_loss_with_the_same_gradients(name: str, options: dict, parts: int) -> None:
    objective = create_objective(name, **options).double()
    emb, present = _inputs()
    scale = torch.tensor(7.0, dtype=torch.float64, requires_grad=True)
    full = objective(emb, present, scale, generator=torch.Generator().manual_seed(3))
    want = torch.autograd.grad(full.loss, [*emb.values(), scale])

    n = present.shape[0]
    total = 0.0
    grads = [torch.zeros_like(t) for t in want]
    for chunk in torch.arange(n).tensor_split(parts):
        own = torch.zeros(n, dtype=torch.bool)
        own[chunk] = True
        out = objective(emb, present, scale, generator=torch.Generator().manual_seed(3), rows=own)
        total += float(out.loss.detach())
        for acc, g in zip(grads, torch.autograd.grad(out.loss, [*emb.values(), scale]), strict=True):
            acc += g
    assert total == pytest.approx(float(full.loss.detach()), rel=1e-12)
    for got, ref in zip(grads, want, strict=True):
        torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-12)


def test_a_rank_without_rows_still_reaches_every_input() -> None:
    """A rank whose items are all absent still back-propagates through every gathered embedding."""
    objective = create_objective("infonce")
    emb, present = _inputs()
    own = torch.zeros(present.shape[0], dtype=torch.bool)
    out = objective(emb, present, torch.tensor(7.0, dtype=torch.float64), rows=own)
    assert float(out.loss.detach()) == 0.0
    grads = torch.autograd.grad(out.loss, list(emb.values()))
    assert all(g is not None and float(g.abs().sum()) == 0.0 for g in grads)
