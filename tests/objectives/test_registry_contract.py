"""Every registered objective: scalar finite loss, gradients reach present items only, two dtypes."""

import inspect

import pytest
import torch
import torch.nn.functional as F

from omnibind.objectives import OBJECTIVES, Objective, create_objective, list_objectives


def _batch(dtype, n=12, m=3, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    names = [f"mod{k}" for k in range(m)]
    x = F.normalize(torch.randn(m, n, d, generator=g, dtype=torch.float64), dim=-1).to(dtype)
    mask = torch.rand(n, m, generator=g) > 0.4
    mask[:4] = True  # every pair of modalities shares at least 4 rows
    for row in range(n):  # every row has at least two present items, so every present item is used
        if mask[row].sum() < 2:
            mask[row, :2] = True
    mask[5] = torch.tensor([True, False, True])  # at least one absent item
    emb = {
        name: torch.where(mask[:, k, None], x[k], 0.0).requires_grad_(True) for k, name in enumerate(names)
    }
    return emb, mask


def test_list_matches_registry():
    assert list_objectives() == OBJECTIVES.names()
    assert {"infonce", "siglip", "symile"} <= set(list_objectives())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", OBJECTIVES.names())
def test_objective_contract(name, dtype):
    objective = create_objective(name).to(dtype)
    assert isinstance(objective, Objective)
    assert objective.joint_similarity in ("sum", "mip")
    emb, mask = _batch(dtype)
    scale = torch.tensor(10.0, dtype=dtype, requires_grad=True)
    out = objective(emb, mask, scale, torch.Generator().manual_seed(0))
    assert out.loss.dim() == 0 and torch.isfinite(out.loss)
    assert out.loss.dtype == dtype
    assert out.count > 0
    assert all(isinstance(v, float) for v in out.terms.values())
    out.loss.backward()
    assert scale.grad is not None and torch.isfinite(scale.grad)
    for k, tensor in enumerate(emb.values()):
        row_grad = tensor.grad.abs().sum(dim=1)
        assert torch.all(row_grad[mask[:, k]] > 0), f"{name}: a present row got no gradient"
        assert torch.all(row_grad[~mask[:, k]] == 0), f"{name}: an absent row got gradient"


@pytest.mark.parametrize("name", OBJECTIVES.names())
def test_unknown_option_is_config_error(name):
    from omnibind.errors import ConfigError

    with pytest.raises(ConfigError):
        create_objective(name, not_an_option=1)


@pytest.mark.parametrize("name", OBJECTIVES.names())
def test_docstring_documents_every_argument(name):
    cls = OBJECTIVES.get(name)
    doc = inspect.getdoc(cls) or ""
    for section in ("Args:", "Inputs:", "Returns:", "References:", "Example:"):
        assert section in doc, f"{cls.__name__} docstring lacks {section}"
    for param in inspect.signature(cls.__init__).parameters:
        if param != "self":
            assert f"{param}:" in doc, f"{cls.__name__} does not document '{param}'"
