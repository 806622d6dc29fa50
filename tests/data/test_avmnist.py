from pathlib import Path

import numpy as np
import pytest

from omnibind.data.avmnist import avmnist, degrade_images
from omnibind.errors import DataError

# the shared data sits next to the repository: <repo>/../shared/data/avmnist
ROOT = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "avmnist"
needs_data = pytest.mark.skipif(
    not (ROOT / "pairs.jsonl").is_file(), reason=f"AV-MNIST data not found at {ROOT} (see shared/data README)"
)


def test_missing_root_explains_where(tmp_path):
    with pytest.raises(DataError, match=r"data\.root=PATH"):
        avmnist(root=None)
    with pytest.raises(DataError, match=r"lacks mnist_images\.npz, fsdd_audio\.npz, pairs\.jsonl"):
        avmnist(root=str(tmp_path))


@needs_data
def test_records_and_limit():
    data = avmnist(root=str(ROOT), limit=5)
    assert [r.split for r in data.records].count("train") == 5
    assert len(data.records) == 15
    r = data.records[0]
    assert r.id == "0" and r.label == 7 and r.split == "train" and r.line == 1
    assert r.facts == {"digit": "seven"} and r.metadata == {"speaker": "theo"}
    assert r.source == "builtin:avmnist"
    assert r.values["image"].shape == (28, 28) and r.values["image"].dtype == np.uint8
    wave, rate = r.values["audio"]
    assert rate == 8000 and wave.dtype == np.float32 and wave.shape == (3001,)
    assert -1.0 <= wave.min() and wave.max() < 1.0
    assert r.values["text"] == "the digit seven"
    assert "text" not in avmnist(root=str(ROOT), text=False, limit=1).records[0].values


@needs_data
def test_full_splits():
    data = avmnist(root=str(ROOT))
    counts = {s: sum(r.split == s for r in data.records) for s in ("train", "val", "test")}
    assert counts == {"train": 2000, "val": 500, "test": 500}
    assert all(r.facts["digit"] in r.values["text"] for r in data.records)


def test_degrade_images_keeps_the_leading_components_without_the_mean():
    rng = np.random.default_rng(0)
    basis = rng.standard_normal((3, 784))
    images = (rng.standard_normal((200, 3)) @ basis * 20 + 128).clip(0, 255).astype(np.uint8)
    images = images.reshape(200, 28, 28)
    full = degrade_images(images, 3).reshape(200, -1).astype(np.float64)
    centred = images.reshape(200, -1) - images.reshape(200, -1).mean(axis=0)
    # three components span (almost) everything here: the result is the centred image, rescaled
    corr = np.corrcoef(full.ravel(), centred.ravel())[0, 1]
    assert corr > 0.99 and full.min() == 0 and full.max() == 255
    one = degrade_images(images, 1).reshape(200, -1).astype(np.float64)
    assert np.linalg.matrix_rank(one - one.mean(axis=0), tol=1e3) == 1  # one direction (up to rounding)


@needs_data
def test_image_pca_option():
    plain = avmnist(root=str(ROOT), text=False, limit=3)
    pca = avmnist(root=str(ROOT), text=False, limit=3, image_pca=4)
    a, b = plain.records[0].values["image"], pca.records[0].values["image"]
    assert b.shape == a.shape and b.dtype == np.uint8 and not np.array_equal(a, b)
    assert np.array_equal(plain.records[0].values["audio"][0], pca.records[0].values["audio"][0])
    with pytest.raises(DataError, match="image_pca must be a number of components"):
        avmnist(root=str(ROOT), image_pca=-1)
