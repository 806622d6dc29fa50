import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from omnibind.objectives import infonce_loss

REFERENCE = Path("/work/shared/reference")


def _reference(name):
    path = REFERENCE / name
    if not path.exists():
        pytest.skip(f"reference vectors not available: {path}")
    return json.loads(path.read_text())


def _ce(a, b, scale):
    logits = scale * a @ b.T
    return F.cross_entropy(logits, torch.arange(a.shape[0]))


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_matches_open_clip_cliploss(dtype, tol):
    data = _reference("openclip_cliploss_b8_d8.json")
    a = torch.tensor(data["inputs"]["image_features"], dtype=dtype, requires_grad=True)
    b = torch.tensor(data["inputs"]["text_features"], dtype=dtype, requires_grad=True)
    scale = torch.tensor(data["parameters"]["logit_scale"], dtype=dtype)
    out = infonce_loss({"image": a, "text": b}, None, scale)
    expected = data["expected"]
    assert out.loss.item() == pytest.approx(expected["loss"], rel=tol, abs=tol)
    assert out.terms["image->text"] == pytest.approx(expected["loss_image_to_text"], rel=tol, abs=tol)
    assert out.terms["text->image"] == pytest.approx(expected["loss_text_to_image"], rel=tol, abs=tol)
    assert out.count == 2
    out.loss.backward()
    for tensor, key in ((a, "grad_image_features"), (b, "grad_text_features")):
        torch.testing.assert_close(tensor.grad, torch.tensor(expected[key], dtype=dtype), rtol=tol, atol=tol)


def _batch(m=3, n=10, d=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = F.normalize(torch.randn(m, n, d, generator=g, dtype=torch.float64), dim=-1)
    return {f"m{k}": x[k] for k in range(m)}


def test_all_pairs_is_mean_over_ordered_pairs():
    emb = _batch()
    x = list(emb.values())
    out = infonce_loss(emb, None, 7.0)
    directed = [_ce(x[i], x[j], 7.0) for i in range(3) for j in range(3) if i != j]
    torch.testing.assert_close(out.loss, torch.stack(directed).mean(), rtol=0, atol=1e-12)
    assert out.count == 6
    # The Symile experiments' CLIP baseline is the sum of the 3 symmetric pair losses = 3 x ours.
    symmetric_sum = sum(
        (_ce(x[i], x[j], 7.0) + _ce(x[j], x[i], 7.0)) / 2 for i, j in [(0, 1), (0, 2), (1, 2)]
    )
    torch.testing.assert_close(3 * out.loss, symmetric_sum, rtol=0, atol=1e-12)


def test_star_around_anchor():
    emb = _batch()
    x = list(emb.values())
    out = infonce_loss(emb, None, 7.0, pairs="m1")
    directed = [_ce(x[1], x[0], 7.0), _ce(x[0], x[1], 7.0), _ce(x[1], x[2], 7.0), _ce(x[2], x[1], 7.0)]
    torch.testing.assert_close(out.loss, torch.stack(directed).mean(), rtol=0, atol=1e-12)
    assert sorted(out.terms) == ["m0->m1", "m1->m0", "m1->m2", "m2->m1"]


def test_missing_items_use_only_rows_where_both_present():
    emb = _batch(n=8)
    x = list(emb.values())
    mask = torch.ones(8, 3, dtype=torch.bool)
    mask[[1, 4], 0] = False
    mask[[2, 4, 6], 2] = False
    out = infonce_loss(emb, mask, 5.0)
    directed = []
    for i in range(3):
        for j in range(3):
            if i != j:
                rows = mask[:, i] & mask[:, j]
                directed.append(_ce(x[i][rows], x[j][rows], 5.0))
    torch.testing.assert_close(out.loss, torch.stack(directed).mean(), rtol=0, atol=1e-12)


def test_absent_rows_never_matter():
    emb = _batch(n=8)
    mask = torch.rand(8, 3, generator=torch.Generator().manual_seed(1)) > 0.3
    mask[:3] = True
    results = []
    for fill in (0.0, 1e6, float("nan")):
        leaves = {}
        for k, (name, x) in enumerate(emb.items()):
            leaves[name] = torch.where(mask[:, k, None], x, torch.full_like(x, fill)).requires_grad_(True)
        out = infonce_loss(leaves, mask, 5.0)
        out.loss.backward()
        for k, name in enumerate(leaves):
            assert torch.all(leaves[name].grad[~mask[:, k]] == 0)
        results.append((out.loss.detach(), [t.grad for t in leaves.values()]))
    for loss, grads in results[1:]:
        assert torch.equal(loss, results[0][0])
        for grad, ref in zip(grads, results[0][1], strict=True):
            assert torch.equal(grad, ref)


def test_pairs_with_fewer_than_two_rows_are_skipped():
    emb = _batch(n=4)
    mask = torch.ones(4, 3, dtype=torch.bool)
    mask[1:, 2] = False  # m2 present in one row only: its pairs are skipped
    out = infonce_loss(emb, mask, 5.0)
    assert out.count == 2 and sorted(out.terms) == ["m0->m1", "m1->m0"]
    x = torch.randn(2, 4, 3, requires_grad=True)
    empty = infonce_loss({"a": x[0], "b": x[1]}, torch.eye(4, 2, dtype=torch.bool), 5.0)
    assert empty.count == 0 and empty.loss.item() == 0.0
    empty.loss.backward()
    assert torch.all(x.grad == 0)


def test_bad_arguments():
    emb = _batch()
    with pytest.raises(ValueError, match="pairs"):
        infonce_loss(emb, None, 1.0, pairs="nope")
    with pytest.raises(ValueError, match="at least 2"):
        infonce_loss({"a": emb["m0"]}, None, 1.0)
    with pytest.raises(ValueError, match="shape"):
        infonce_loss({"a": emb["m0"], "b": emb["m1"][:5]}, None, 1.0)
