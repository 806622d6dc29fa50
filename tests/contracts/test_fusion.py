"""Contract tests every registered fusion head must pass: shapes, registered parameters that all receive a
gradient, no effect of an absent modality's embedding, no NaN with one modality, a modality absent for the
whole batch, documented constructor arguments and a state-dict round trip."""

from __future__ import annotations

import inspect
import re

import pytest
import torch

from omnibind.errors import ConfigError
from omnibind.fusion import FUSION_HEADS, FusionHead, create_head, list_heads

MODALITIES = ("image", "audio", "text")
DIM, CLASSES, BATCH = 8, 5, 6
SMALL = {
    "late": {"hidden": 16},
    "attention": {"width": 16},
    "experts": {"width": 16},
    "sequential": {"state": 16, "hidden": 16},
}


def _head(name: str, seed: int = 0) -> FusionHead:
    torch.manual_seed(seed)
    return create_head(name, MODALITIES, DIM, CLASSES, **SMALL.get(name, {}))


def _inputs(seed: int = 1) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {
        m: torch.nn.functional.normalize(torch.randn(BATCH, DIM, generator=gen), dim=-1) for m in MODALITIES
    }


def _mixed_presence() -> torch.Tensor:
    return torch.tensor([[1, 1, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 0, 1], [0, 1, 1]], dtype=torch.bool)


def test_the_registry_holds_the_four_heads() -> None:
    assert set(list_heads()) >= {"late", "attention", "sequential", "experts"}


@pytest.mark.parametrize("name", list_heads())
def test_shapes_and_every_parameter_gets_a_gradient(name: str) -> None:
    head = _head(name).train()
    z = {m: v.requires_grad_(True) for m, v in _inputs().items()}
    out = head(z, torch.ones(BATCH, len(MODALITIES), dtype=torch.bool))
    assert out.logits.shape == (BATCH, CLASSES)
    targets = torch.arange(BATCH) % CLASSES
    loss = head.loss(out, targets, lambda lg, y: torch.nn.functional.cross_entropy(lg, y, reduction="none"))
    loss.backward()
    params = dict(head.named_parameters())
    assert params, "a head without registered parameters cannot learn"
    registered = {id(p) for p in head.parameters()}
    for module in head.modules():  # nothing trainable hides outside the registry (MultiBench LRTF bug)
        for value in vars(module).values():
            if isinstance(value, torch.nn.Parameter):
                assert id(value) in registered
    for pname, p in params.items():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"{name}: {pname} gets no gradient"
    for m in MODALITIES:
        assert z[m].grad is not None and z[m].grad.abs().sum() > 0, f"{name}: {m} does not reach the output"


@pytest.mark.parametrize("name", list_heads())
def test_an_absent_modality_has_no_effect(name: str) -> None:
    head = _head(name).eval()
    present = _mixed_presence()
    z = _inputs()
    before = head(z, present)
    changed = {m: v.clone() for m, v in z.items()}
    for j, m in enumerate(MODALITIES):
        absent = ~present[:, j]
        changed[m][absent] = torch.randn(int(absent.sum()), DIM) * 100  # anything, even huge values
    changed["audio"][~present[:, 1]] = float("nan")  # or NaN
    after = head(changed, present)
    assert torch.equal(before.logits, after.logits)


@pytest.mark.parametrize("name", list_heads())
def test_one_modality_alone_and_a_modality_absent_for_the_whole_batch(name: str) -> None:
    head = _head(name).train()
    z = _inputs()
    for j in range(len(MODALITIES)):
        only = torch.zeros(BATCH, len(MODALITIES), dtype=torch.bool)
        only[:, j] = True
        out = head(z, only)
        assert torch.isfinite(out.logits).all(), f"{name}: NaN with only {MODALITIES[j]}"
    nobody_audio = _mixed_presence()
    nobody_audio[:, 1] = False
    nobody_audio[~nobody_audio.any(dim=1), 0] = True
    out = head(z, nobody_audio)
    loss = head.loss(
        out,
        torch.zeros(BATCH, dtype=torch.long),
        lambda lg, y: torch.nn.functional.cross_entropy(lg, y, reduction="none"),
    )
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in head.parameters() if p.grad is not None)


@pytest.mark.parametrize("name", list_heads())
def test_items_do_not_affect_each_other_in_eval(name: str) -> None:
    head = _head(name).eval()
    z, present = _inputs(), _mixed_presence()
    full = head(z, present).logits
    part = head({m: v[:2] for m, v in z.items()}, present[:2]).logits
    assert torch.allclose(full[:2], part, atol=1e-6)


@pytest.mark.parametrize("name", list_heads())
def test_state_dict_round_trip(name: str) -> None:
    a, b = _head(name, seed=0).eval(), _head(name, seed=1).eval()
    b.load_state_dict(a.state_dict())
    z, present = _inputs(), _mixed_presence()
    assert torch.equal(a(z, present).logits, b(z, present).logits)


@pytest.mark.parametrize("name", list_heads())
def test_every_constructor_argument_is_documented(name: str) -> None:
    cls = FUSION_HEADS.get(name)
    doc = inspect.getdoc(cls) or ""
    for arg in inspect.signature(cls.__init__).parameters:
        if arg != "self":
            assert re.search(rf"^\s+{arg}:", doc, re.M), f"{name}: argument '{arg}' is not documented"


def test_unknown_options_and_heads_are_clear_errors() -> None:
    with pytest.raises(ConfigError, match="did you mean 'hidden'"):
        create_head("late", MODALITIES, DIM, CLASSES, hiden=3)
    with pytest.raises(KeyError, match="did you mean 'late'"):
        create_head("lat", MODALITIES, DIM, CLASSES)
