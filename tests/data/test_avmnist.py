from pathlib import Path

import numpy as np
import pytest

from omnibind.data.avmnist import avmnist
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
