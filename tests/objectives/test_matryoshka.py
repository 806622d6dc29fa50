"""Matryoshka wrapper: parity with sentence-transformers' MatryoshkaLoss over MNRL, config integration."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from omnibind.config import config_from_dict
from omnibind.errors import ConfigError
from omnibind.objectives import create_objective, infonce_loss
from omnibind.objectives.matryoshka import Matryoshka, matryoshka_loss, mnrl_loss
from omnibind.types import LossOutput
from tests.helpers import SHARED, tiny_shapes_config

REFERENCE = SHARED / "reference" / "st_matryoshka_mnrl_b8_d8.json"


def _reference() -> dict:
    if not REFERENCE.exists():
        pytest.skip(f"reference vectors {REFERENCE} are absent")
    return json.loads(REFERENCE.read_text())


def _inputs(ref: dict, columns: list[str]) -> list[torch.Tensor]:
    return [torch.tensor(ref["inputs"][c], dtype=torch.float64, requires_grad=True) for c in columns]


def _mnrl_fn(scale: float):
    """MNRL in the objective call convention: the keys are anchor, positive and optionally negative."""

    def fn(emb, present, logit_scale):
        return LossOutput(mnrl_loss(emb["anchor"], emb["positive"], emb.get("negative"), scale), {}, 1)

    return fn


@pytest.mark.parametrize("case", [0, 1])
def test_mnrl_matches_reference(case):
    ref = _reference()
    c = ref["cases"][case]
    xs = _inputs(ref, c["columns"])
    loss = mnrl_loss(*xs, scale=ref["parameters"]["scale"])
    assert abs(float(loss.detach()) - c["mnrl_loss"]) < 1e-10
    grads = torch.autograd.grad(loss, xs)
    for g, expected in zip(grads, c["mnrl_grad"], strict=True):
        torch.testing.assert_close(g, torch.tensor(expected, dtype=torch.float64), atol=1e-10, rtol=0)


@pytest.mark.parametrize("case", [0, 1])
@pytest.mark.parametrize("variant", [0, 1])
def test_matryoshka_matches_reference(case, variant):
    ref = _reference()
    c = ref["cases"][case]
    m = c["matryoshka"][variant]
    xs = _inputs(ref, c["columns"])
    emb = dict(zip(c["columns"], xs, strict=True))
    fn = _mnrl_fn(ref["parameters"]["scale"])
    out = matryoshka_loss(fn, emb, None, 1.0, m["matryoshka_dims"], m["matryoshka_weights"])
    assert abs(float(out.loss.detach()) - m["loss"]) < 1e-10
    for k, value in c["mnrl_loss_per_dim"].items():
        assert abs(out.terms[f"dim/{k}"] - value) < 1e-10
    grads = torch.autograd.grad(out.loss, xs)
    for g, expected in zip(grads, m["grad"], strict=True):
        torch.testing.assert_close(g, torch.tensor(expected, dtype=torch.float64), atol=1e-10, rtol=0)


def test_create_objective_wraps_and_keeps_joint_similarity():
    obj = create_objective("symile", matryoshka={"dims": [4, 8], "weights": [0.5, 1.0]}, negatives="n2")
    assert isinstance(obj, Matryoshka) and obj.joint_similarity == "mip"
    assert obj.inner.negatives == "n2"
    assert create_objective("infonce", matryoshka={"dims": [8]}).joint_similarity == "sum"


def test_wrapper_equals_weighted_sum_of_inner_losses():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 10, 16, generator=g, dtype=torch.float64)
    emb = {"a": x[0], "b": x[1]}
    present = torch.ones(10, 2, dtype=torch.bool)
    present[3, 1] = False
    out = create_objective("infonce", matryoshka={"dims": [4, 16], "weights": [2.0, 1.0]})(
        emb, present, torch.tensor(10.0, dtype=torch.float64)
    )
    expected = sum(
        w * infonce_loss({n: F.normalize(v[:, :k], dim=-1) for n, v in emb.items()}, present, 10.0).loss
        for k, w in ((4, 2.0), (16, 1.0))
    )
    assert abs(float(out.loss) - float(expected)) < 1e-12
    assert out.count == 2


def test_absent_rows_get_no_gradient_even_if_nan():
    x = torch.randn(2, 6, 8, dtype=torch.float64)
    x[1, 2] = float("nan")
    a, b = x[0].clone().requires_grad_(), x[1].clone().requires_grad_()
    present = torch.ones(6, 2, dtype=torch.bool)
    present[2, 1] = False
    out = create_objective("infonce", matryoshka={"dims": [4, 8]})({"a": a, "b": b}, present, 10.0)
    out.loss.backward()
    assert torch.isfinite(out.loss) and torch.isfinite(b.grad).all() and bool((b.grad[2] == 0).all())


@pytest.mark.parametrize(
    "bad",
    [{"dims": []}, {"dims": [4, 4]}, {"dims": [4, 8], "weights": [1.0]}, {"widths": [4]}, {"dims": [0]}],
)
def test_bad_matryoshka_options(bad):
    with pytest.raises(ConfigError, match="matryoshka"):
        create_objective("infonce", matryoshka=bad)


def test_prefix_wider_than_embedding():
    obj = create_objective("infonce", matryoshka={"dims": [4, 32]})
    x = torch.randn(2, 4, 8)
    with pytest.raises(ConfigError, match="exceeds the embedding width 8"):
        obj({"a": x[0], "b": x[1]}, None, 10.0)


def test_config_and_trainer_accept_matryoshka(tmp_path):
    from omnibind.training.trainer import train

    raw = tiny_shapes_config("infonce", n=64, epochs=1, threads=1)
    raw["objective"]["matryoshka"] = {"dims": [4, 8, 16], "weights": [0.25, 0.5, 1.0]}
    result = train(config_from_dict(raw), tmp_path / "run")
    assert result.steps > 0 and result.model.joint_similarity == "sum"
