import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from omnibind.objectives import create_objective, siglip_loss

REFERENCE = Path("/work/shared/reference")


def _reference(name):
    path = REFERENCE / name
    if not path.exists():
        pytest.skip(f"reference vectors not available: {path}")
    return json.loads(path.read_text())


def _pair(a, b, scale, bias):
    logits = scale * a @ b.T + bias
    sign = 2 * torch.eye(a.shape[0], dtype=a.dtype) - 1
    return -F.logsigmoid(sign * logits).sum() / a.shape[0]


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_matches_open_clip_siglip(dtype, tol):
    data = _reference("openclip_siglip_b8_d8.json")
    a = torch.tensor(data["inputs"]["image_features"], dtype=dtype, requires_grad=True)
    b = torch.tensor(data["inputs"]["text_features"], dtype=dtype, requires_grad=True)
    p = data["parameters"]
    out = siglip_loss({"image": a, "text": b}, None, p["logit_scale"], p["logit_bias"])
    assert out.loss.item() == pytest.approx(data["expected"]["loss"], rel=tol, abs=tol)
    assert out.count == 1
    out.loss.backward()
    for tensor, key in ((a, "grad_image_features"), (b, "grad_text_features")):
        ref = torch.tensor(data["expected"][key], dtype=dtype)
        torch.testing.assert_close(tensor.grad, ref, rtol=tol, atol=tol)


def test_three_modalities_with_missing_items():
    g = torch.Generator().manual_seed(0)
    x = F.normalize(torch.randn(3, 9, 5, generator=g, dtype=torch.float64), dim=-1)
    mask = torch.rand(9, 3, generator=g) > 0.3
    emb = {"a": x[0], "b": x[1], "c": x[2]}
    out = siglip_loss(emb, mask, 10.0, -10.0)
    expected = []
    for i, j in [(0, 1), (0, 2), (1, 2)]:
        rows = mask[:, i] & mask[:, j]
        if rows.any():
            expected.append(_pair(x[i][rows], x[j][rows], 10.0, -10.0))
    torch.testing.assert_close(out.loss, torch.stack(expected).mean(), rtol=0, atol=1e-12)
    assert out.count == len(expected)


def test_absent_rows_never_matter():
    g = torch.Generator().manual_seed(2)
    x = F.normalize(torch.randn(3, 8, 5, generator=g, dtype=torch.float64), dim=-1)
    mask = torch.rand(8, 3, generator=g) > 0.3
    results = []
    for fill in (0.0, float("nan")):
        leaves = [torch.where(mask[:, k, None], x[k], fill).requires_grad_(True) for k in range(3)]
        out = siglip_loss(dict(zip("abc", leaves, strict=True)), mask, 10.0, -10.0)
        out.loss.backward()
        for k in range(3):
            assert torch.all(leaves[k].grad[~mask[:, k]] == 0)
        results.append((out.loss.detach(), [t.grad for t in leaves]))
    assert torch.equal(results[0][0], results[1][0])
    for grad, ref in zip(results[1][1], results[0][1], strict=True):
        assert torch.equal(grad, ref)


def test_module_learns_bias():
    objective = create_objective("siglip", logit_bias_init=-3.0)
    assert objective.logit_bias.item() == -3.0
    x = F.normalize(torch.randn(2, 4, 8), dim=-1)
    out = objective({"a": x[0], "b": x[1]}, None, torch.tensor(10.0))
    out.loss.backward()
    assert objective.logit_bias.grad is not None and objective.logit_bias.grad.abs() > 0
