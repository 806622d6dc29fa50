"""OmniModel: encode on present rows only, save/load bit-identical, embed raw values."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from omnibind.config import config_from_dict
from omnibind.data.loading import build_kinds, build_splits
from omnibind.errors import OmnibindError
from omnibind.model import OmniModel
from tests.helpers import tiny_shapes_config


@pytest.fixture(scope="module")
def setup():
    cfg = config_from_dict(tiny_shapes_config(n=80))
    kinds = build_kinds(cfg)
    splits = build_splits(cfg, kinds, wanted=("train", "test"), progress=False)
    torch.manual_seed(0)
    return cfg, OmniModel(cfg), splits.datasets["train"]


def test_encode_shapes_and_absent_rows_are_zero(setup) -> None:
    cfg, model, ds = setup
    batch = ds.batch(torch.arange(16))
    out = model.encode(batch)
    assert list(out) == list(cfg.modalities)
    for m, name in enumerate(model.modalities):
        z = out[name]
        assert z.shape == (16, 16)
        present = batch.present[:, m]
        assert torch.allclose(z[present].norm(dim=-1), torch.ones(int(present.sum())), atol=1e-5)
        assert torch.all(z[~present] == 0)


def test_embedding_of_an_item_does_not_depend_on_its_batch(setup) -> None:
    _, model, ds = setup
    model.eval()
    with torch.no_grad():
        full = model.encode(ds.batch(torch.arange(16)))
        alone = model.encode(ds.batch(torch.tensor([3])))
    for m, name in enumerate(model.modalities):
        if ds.present[3, m]:
            assert torch.allclose(full[name][3], alone[name][0], atol=1e-6)


def test_save_load_bit_identical(setup, tmp_path: Path) -> None:
    _, model, ds = setup
    model.eval()
    model.save(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "model.safetensors"]
    loaded = OmniModel.load(tmp_path / "m")
    batch = ds.batch(torch.arange(20))
    with torch.no_grad():
        a, b = model.encode(batch), loaded.encode(batch)
    for name in a:
        assert torch.equal(a[name], b[name])
    assert loaded.config.modalities["table"].stats, "tabular statistics travel with the model"


def test_load_rejects_a_folder_that_is_not_a_model(tmp_path: Path) -> None:
    with pytest.raises(OmnibindError, match="not an omnibind model"):
        OmniModel.load(tmp_path)


def test_embed_raw_values_matches_encode(setup) -> None:
    _, model, ds = setup
    model.eval()
    rec = ds.records[0]
    z = model.embed([rec.values["caption"]] if "caption" in rec.values else ["a red circle"], "caption")
    assert z.shape == (1, 16)
    with pytest.raises(OmnibindError, match="unknown modality 'captoin'"):
        model.embed(["x"], "captoin")


def test_logit_scale_is_clamped(setup) -> None:
    _, model, _ = setup
    with torch.no_grad():
        model.log_logit_scale.fill_(10.0)
    model.clamp_logit_scale()
    assert float(model.logit_scale.detach()) == pytest.approx(100.0, rel=1e-5)


def test_load_only_the_named_towers(tmp_path: Path) -> None:
    """``OmniModel.load(dir, modalities=[...])`` builds and reads only those towers; their embeddings are
    the full model's."""
    cfg = config_from_dict(tiny_shapes_config(n=64))
    data = build_splits(cfg, build_kinds(cfg), wanted=("train",), progress=False).datasets["train"]
    full = OmniModel(cfg)
    full.save(tmp_path / "model")
    full = OmniModel.load(tmp_path / "model")
    part = OmniModel.load(tmp_path / "model", modalities=["caption", "image"])
    assert part.modalities == ("image", "caption")  # the saved order
    assert set(part.encoders) == {"image", "caption"} and set(part.projections) == {"image", "caption"}
    assert sum(p.numel() for p in part.parameters()) < sum(p.numel() for p in full.parameters())
    batch = data.batch(range(8))
    for name in ("image", "caption"):
        torch.testing.assert_close(
            part.encode_modality(name, batch.values[name]), full.encode_modality(name, batch.values[name])
        )
    with pytest.raises(OmnibindError, match="no modality 'imag'.*did you mean 'image'"):
        OmniModel.load(tmp_path / "model", modalities=["imag"])
    with pytest.raises(OmnibindError, match=r"modalities=\[\]"):
        OmniModel.load(tmp_path / "model", modalities=[])
