"""Hard negatives (``hard_negatives=``) in InfoNCE, SigLIP and Symile against small dense references.

The references below are written per query row with Python loops over explicit candidate lists, without
the objectives' helpers: a candidate is an in-batch row that has the target modality (and the query's
pair) or a negative that has every target modality and is allowed for the row.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from omnibind.objectives import create_objective, infonce_loss, siglip_loss, symile_loss
from omnibind.objectives.matryoshka import matryoshka_loss
from omnibind.types import HardNegatives

NAMES = "abc"


def _unit(g: torch.Generator, *shape: int) -> torch.Tensor:
    return F.normalize(torch.randn(*shape, generator=g, dtype=torch.float64), dim=-1)


def _case(
    n: int = 6, k: int = 5, m: int = 3, d: int = 8, seed: int = 0
) -> tuple[dict, torch.Tensor, HardNegatives]:
    g = torch.Generator().manual_seed(seed)
    names = NAMES[:m]
    emb = {x: _unit(g, n, d).requires_grad_(True) for x in names}
    present = torch.ones(n, m, dtype=torch.bool)
    present[1, m - 1] = False  # row 1 lacks the last modality
    present[4, 0] = False
    neg_present = torch.ones(k, m, dtype=torch.bool)
    neg_present[0, 1] = False  # negative 0 lacks b: never a b candidate
    neg_present[3, 0] = False
    allowed = torch.rand(n, k, generator=g) > 0.25
    allowed[2, :] = False  # row 2: no negative at all (its duplicates, say)
    negs = {x: _unit(g, k, d).requires_grad_(True) for x in names}
    # what an absent row holds must not matter
    negs["b"].data[0] = float("nan")
    return emb, present, HardNegatives(negs, neg_present, allowed)


def _lse(values: list[torch.Tensor]) -> torch.Tensor:
    return torch.logsumexp(torch.stack(values), dim=0)


def _infonce_reference(emb: dict, present: torch.Tensor, hard: HardNegatives, s: float) -> torch.Tensor:
    names = list(emb)
    terms = []
    for i, j in itertools.combinations(range(len(names)), 2):
        rows = [r for r in range(present.shape[0]) if present[r, i] and present[r, j]]
        if len(rows) < 2:
            continue
        for a, b in ((i, j), (j, i)):
            per_row = []
            for q in rows:
                x = emb[names[a]][q]
                cands = [s * x @ emb[names[b]][r] for r in rows]
                cands += [
                    s * x @ hard.embeddings[names[b]][k]
                    for k in range(hard.present.shape[0])
                    if hard.present[k, b] and hard.allowed[q, k]
                ]
                per_row.append(_lse(cands) - s * x @ emb[names[b]][q])
            terms.append(torch.stack(per_row).mean())
    return torch.stack(terms).mean()


def _siglip_reference(
    emb: dict, present: torch.Tensor, hard: HardNegatives, s: float, bias: float
) -> torch.Tensor:
    names = list(emb)
    terms = []
    for i, j in itertools.combinations(range(len(names)), 2):
        rows = [r for r in range(present.shape[0]) if present[r, i] and present[r, j]]
        if not rows:
            continue
        total = torch.zeros((), dtype=torch.float64)
        for q in rows:
            for r in rows:
                z = 1.0 if q == r else -1.0
                total = total + F.softplus(-z * (s * emb[names[i]][q] @ emb[names[j]][r] + bias))
            for a, b in ((i, j), (j, i)):  # both ways round, label -1
                for k in range(hard.present.shape[0]):
                    if hard.present[k, b] and hard.allowed[q, k]:
                        logit = s * emb[names[a]][q] @ hard.embeddings[names[b]][k] + bias
                        total = total + F.softplus(logit)
        terms.append(total / len(rows))
    return torch.stack(terms).mean()


def _mip(vectors: list[torch.Tensor]) -> torch.Tensor:
    out = vectors[0]
    for v in vectors[1:]:
        out = out * v
    return out.sum()


def _symile_n2_reference(emb: dict, present: torch.Tensor, hard: HardNegatives, s: float) -> torch.Tensor:
    names = list(emb)
    n = present.shape[0]
    per_anchor = []
    for i in range(len(names)):
        anchor_rows = [r for r in range(n) if present[r, i] and int(present[r].sum()) >= 2]
        if not anchor_rows:
            continue
        losses = []
        for q in anchor_rows:
            others = [j for j in range(len(names)) if j != i and present[q, j]]
            x = emb[names[i]][q]
            pools = [[r for r in range(n) if present[r, j]] for j in others]
            cands = [
                s * _mip([x] + [emb[names[j]][r] for j, r in zip(others, combo, strict=True)])
                for combo in itertools.product(*pools)
            ]
            for k in range(hard.present.shape[0]):
                if all(hard.present[k, j] for j in others) and hard.allowed[q, k]:
                    cands.append(s * _mip([x] + [hard.embeddings[names[j]][k] for j in others]))
            positive = s * _mip([x] + [emb[names[j]][q] for j in others])
            losses.append(_lse(cands) - positive)
        per_anchor.append(torch.stack(losses).sum() / len(anchor_rows))
    return torch.stack(per_anchor).mean()


def _symile_n_reference(
    emb: dict, present: torch.Tensor, hard: HardNegatives, s: float, perms: dict
) -> torch.Tensor:
    names = list(emb)
    n = present.shape[0]
    per_anchor = []
    for i in range(len(names)):
        anchor_rows = [r for r in range(n) if present[r, i] and int(present[r].sum()) >= 2]
        losses = []
        for q in anchor_rows:
            others = [j for j in range(len(names)) if j != i and present[q, j]]
            x = emb[names[i]][q]
            positive = s * _mip([x] + [emb[names[j]][q] for j in others])
            cands = []
            for c in range(n):
                if c == q:
                    cands.append(positive)
                    continue
                rows = {j: int(perms[(names[i], names[j])][c]) for j in others}
                if all(present[rows[j], j] for j in others):
                    cands.append(s * _mip([x] + [emb[names[j]][rows[j]] for j in others]))
            for k in range(hard.present.shape[0]):
                if all(hard.present[k, j] for j in others) and hard.allowed[q, k]:
                    cands.append(s * _mip([x] + [hard.embeddings[names[j]][k] for j in others]))
            losses.append(_lse(cands) - positive)
        per_anchor.append(torch.stack(losses).sum() / len(anchor_rows))
    return torch.stack(per_anchor).mean()


def _clean(hard: HardNegatives) -> HardNegatives:
    """The negatives with zeros where absent (the references index only present rows)."""
    cleaned = {
        x: torch.where(hard.present[:, m, None], e, torch.zeros(()))
        for m, (x, e) in enumerate(hard.embeddings.items())
    }
    return HardNegatives(cleaned, hard.present, hard.allowed)


@pytest.mark.parametrize("m", [2, 3])
def test_infonce_with_hard_negatives_equals_the_dense_reference(m: int) -> None:
    emb, present, hard = _case(m=m)
    got = infonce_loss(emb, present, 5.0, hard_negatives=hard)
    want = _infonce_reference(emb, present, _clean(hard), 5.0)
    assert float(got.loss.detach()) == pytest.approx(float(want.detach()), rel=1e-12)
    grads = torch.autograd.grad(got.loss, list(hard.embeddings.values()))
    assert all(torch.isfinite(g).all() for g in grads)
    assert float(grads[1][0].abs().sum()) == 0.0  # negative 0 has no b: nothing reaches its b row


def test_infonce_star_and_own_rows_with_hard_negatives() -> None:
    emb, present, hard = _case()
    full = infonce_loss(emb, present, 5.0, pairs="a", hard_negatives=hard)
    parts = []
    for chunk in torch.arange(6).tensor_split(2):
        own = torch.zeros(6, dtype=torch.bool)
        own[chunk] = True
        parts.append(infonce_loss(emb, present, 5.0, pairs="a", own=own, hard_negatives=hard).loss.detach())
    assert float(sum(parts)) == pytest.approx(float(full.loss.detach()), rel=1e-12)


def test_siglip_with_hard_negatives_equals_the_dense_reference() -> None:
    emb, present, hard = _case()
    got = siglip_loss(emb, present, 5.0, -2.0, hard_negatives=hard)
    want = _siglip_reference(emb, present, _clean(hard), 5.0, -2.0)
    assert float(got.loss.detach()) == pytest.approx(float(want.detach()), rel=1e-12)
    grads = torch.autograd.grad(got.loss, [*emb.values(), *hard.embeddings.values()])
    assert all(torch.isfinite(g).all() for g in grads)


def test_symile_n2_with_hard_negatives_equals_the_dense_reference() -> None:
    emb, present, hard = _case(n=5, k=4)
    got = symile_loss(emb, present, 3.0, negatives="n2", hard_negatives=hard)
    want = _symile_n2_reference(emb, present, _clean(hard), 3.0)
    assert float(got.loss.detach()) == pytest.approx(float(want.detach()), rel=1e-12)
    grads = torch.autograd.grad(got.loss, list(hard.embeddings.values()))
    assert all(torch.isfinite(g).all() for g in grads)


def test_symile_n_with_hard_negatives_equals_the_dense_reference() -> None:
    emb, present, hard = _case()
    g = torch.Generator().manual_seed(5)
    perms = {(a, b): torch.randperm(6, generator=g) for a in NAMES for b in NAMES if a != b}
    got = symile_loss(emb, present, 3.0, negatives="n", permutations=perms, hard_negatives=hard)
    want = _symile_n_reference(emb, present, _clean(hard), 3.0, perms)
    assert float(got.loss.detach()) == pytest.approx(float(want.detach()), rel=1e-12)


@pytest.mark.parametrize(
    ("name", "options"),
    [("infonce", {}), ("siglip", {}), ("symile", {"negatives": "n"}), ("symile", {"negatives": "n2"})],
)
def test_no_allowed_negative_is_the_plain_loss(name: str, options: dict) -> None:
    emb, present, hard = _case()
    none = HardNegatives(hard.embeddings, hard.present, torch.zeros_like(hard.allowed))
    objective = create_objective(name, **options).double()
    plain = objective(emb, present, torch.tensor(4.0), torch.Generator().manual_seed(1))
    masked = objective(emb, present, torch.tensor(4.0), torch.Generator().manual_seed(1), hard_negatives=none)
    assert float(masked.loss.detach()) == pytest.approx(float(plain.loss.detach()), rel=1e-12)


@pytest.mark.parametrize(
    ("name", "options"),
    [("infonce", {}), ("siglip", {}), ("symile", {"negatives": "n"}), ("symile", {"negatives": "n2"})],
)
def test_hard_negatives_raise_the_loss(name: str, options: dict) -> None:
    """Extra negatives only add terms to each row's normaliser (or label -1 cells)."""
    emb, present, hard = _case()
    objective = create_objective(name, **options).double()
    plain = objective(emb, present, torch.tensor(4.0), torch.Generator().manual_seed(1))
    more = objective(emb, present, torch.tensor(4.0), torch.Generator().manual_seed(1), hard_negatives=hard)
    assert float(more.loss.detach()) > float(plain.loss.detach())


def test_local_losses_with_hard_negatives_sum_to_the_loss() -> None:
    for name, options in [("siglip", {}), ("symile", {"negatives": "n"}), ("symile", {"negatives": "n2"})]:
        objective = create_objective(name, **options).double()
        emb, present, hard = _case()
        full = objective(
            emb, present, torch.tensor(4.0), torch.Generator().manual_seed(2), hard_negatives=hard
        )
        total = 0.0
        for chunk in torch.arange(6).tensor_split(3):
            own = torch.zeros(6, dtype=torch.bool)
            own[chunk] = True
            out = objective(
                emb,
                present,
                torch.tensor(4.0),
                torch.Generator().manual_seed(2),
                rows=own,
                hard_negatives=hard,
            )
            total += float(out.loss.detach())
        assert total == pytest.approx(float(full.loss.detach()), rel=1e-12), name


def test_matryoshka_cuts_the_hard_negatives_too() -> None:
    emb, present, hard = _case(d=8)
    got = matryoshka_loss(infonce_loss, emb, present, 5.0, dims=[4, 8], hard_negatives=hard)
    want = 0.0
    for k in (4, 8):
        cut = {x: F.normalize(e[:, :k], dim=-1) for x, e in emb.items()}
        negs = {x: F.normalize(e[:, :k], dim=-1) for x, e in _clean(hard).embeddings.items()}
        want += float(
            _infonce_reference(cut, present, HardNegatives(negs, hard.present, hard.allowed), 5.0).detach()
        )
    assert float(got.loss.detach()) == pytest.approx(want, rel=1e-12)
    assert not math.isnan(float(got.loss.detach()))


def test_hard_negatives_of_other_modalities_are_refused() -> None:
    emb, present, hard = _case()
    wrong = HardNegatives({"a": hard.embeddings["a"]}, hard.present[:, :1], hard.allowed)
    with pytest.raises(ValueError, match="expected the batch's"):
        infonce_loss(emb, present, 5.0, hard_negatives=wrong)
