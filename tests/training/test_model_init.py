"""``model.init`` / ``model.freeze_encoders``, ``projection: bn`` and ``normalize: false``.

The demo's Symile joint head trains standardised, unnormalised projections on the frozen encoders of a
trained run; these tests pin what each piece promises.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from omnibind.config import config_from_dict
from omnibind.encoders.projection import Projection, Standardize
from omnibind.errors import ConfigError, OmnibindError
from omnibind.model import OmniModel
from omnibind.training.trainer import train
from tests.helpers import tiny_shapes_config


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "model" / "model.safetensors"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("init") / "base"
    train(config_from_dict(tiny_shapes_config(n=160, epochs=1, threads=1)), run)
    return run


def _joint(base: Path, **model: object) -> dict:
    raw = tiny_shapes_config(n=160, epochs=2, threads=1)
    raw["model"] = {"dim": 16, "projection": "bn", "normalize": False, "init": str(base), **model}
    return raw


def test_frozen_init_keeps_the_encoders_and_trains_new_projections(trained: Path, tmp_path: Path) -> None:
    result = train(config_from_dict(_joint(trained, freeze_encoders=True)), tmp_path / "joint")
    before, after = _weights(trained), _weights(tmp_path / "joint")
    encoder_keys = [k for k in before if k.startswith("encoders.")]
    assert encoder_keys
    for key in encoder_keys:
        assert torch.equal(before[key], after[key]), key  # copied, then never changed
    assert any(k.startswith("projections.") and "running_mean" in k for k in after)  # the bn projection
    model = result.model
    assert not any(p.requires_grad for p in model.encoders.parameters())
    model.train()
    assert not any(m.training for m in model.encoders.modules())  # frozen encoders stay in eval mode
    model.eval()
    z = model.embed(["a red circle", "a blue square"], "caption")
    assert not torch.allclose(z.norm(dim=1), torch.ones(2))  # normalize: false


def test_init_without_freezing_copies_projections_when_they_fit(trained: Path, tmp_path: Path) -> None:
    raw = tiny_shapes_config(n=160, epochs=1, threads=1, max_steps=1, lr=1e-9)
    raw["model"] = {"dim": 16, "init": str(trained)}
    train(config_from_dict(raw), tmp_path / "cont")
    before, after = _weights(trained), _weights(tmp_path / "cont")
    key = next(k for k in before if k.startswith("projections."))
    assert torch.allclose(before[key], after[key], atol=1e-6)  # started from the trained projection


def test_init_errors_name_the_key(trained: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="model.freeze_encoders needs model.init"):
        config_from_dict({**tiny_shapes_config(), "model": {"dim": 16, "freeze_encoders": True}})
    classify = {**tiny_shapes_config(), "model": {"dim": 16, "init": str(trained)}}
    classify["task"] = {"label": "label", "head": "late"}
    with pytest.raises(ConfigError, match="a classifier starts from a trained run with task.init"):
        config_from_dict(classify)
    with pytest.raises(OmnibindError, match="model.init: .* is neither a run folder"):
        train(config_from_dict(_joint(tmp_path / "nowhere")), tmp_path / "a")
    raw = _joint(trained)
    raw["modalities"] = copy.deepcopy(raw["modalities"])
    raw["modalities"]["image"]["encoder"]["width"] = 12
    with pytest.raises(OmnibindError, match="model.init: modality 'image' is declared differently"):
        train(config_from_dict(raw), tmp_path / "b")
    assert not (tmp_path / "b").exists()  # refused before anything was written


def test_standardize_handles_one_row_and_is_row_independent_at_evaluation() -> None:
    torch.manual_seed(0)
    proj = Projection(6, 4, standardize=True)
    x = torch.randn(32, 6) * torch.tensor([10.0, 1, 1, 1, 0.1, 1]) + 3
    proj.train()
    for _ in range(50):
        proj(x)  # running statistics
    assert proj(x[:1]).shape == (1, 4)  # one row in training: the running averages, no error
    proj.eval()
    alone = proj(x[:1])
    assert torch.allclose(alone, proj(x)[:1], atol=1e-6)
    out = proj(x)
    assert 0.3 < float(out.detach().norm(dim=1).mean()) < 3.0  # starts at about unit length
    assert isinstance(proj.net[0], Standardize)


def test_bn_projection_config(trained: Path) -> None:
    model = OmniModel(config_from_dict(_joint(trained)))
    assert isinstance(model.projections["image"], Projection)
    with pytest.raises(ConfigError, match="model.projection must be linear, mlp, bn or none"):
        config_from_dict({**tiny_shapes_config(), "model": {"dim": 16, "projection": "batch"}})
