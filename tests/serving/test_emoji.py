"""The emoji demo: the builtin:emoji loader over ../shared/data/emoji_text, examples/emoji.yaml, and (slow)
train a little, index, and search it through the service."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from omnibind.config import load_config
from omnibind.data.sources import load_source
from omnibind.errors import DataError
from tests.helpers import shared_data

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "emoji.yaml"


def test_loader_reads_the_shared_folder():
    root = shared_data("emoji_text")
    data = load_source("builtin:emoji?limit=5", root=str(root))
    assert len(data.records) == 15 and data.info["splits"] == {"train": 5, "val": 5, "test": 5}
    record = data.records[0]
    assert record.values["image"].shape == (64, 64, 3) and record.values["image"].dtype == np.uint8
    assert record.values["text"] == record.label and record.metadata["group"]
    tagged = load_source("builtin:emoji?limit=1&text=label%2Btags", root=str(root)).records[0]
    assert tagged.values["text"].startswith(tagged.label + ": ")


def test_loader_says_what_is_missing(tmp_path):
    with pytest.raises(DataError, match="data.root"):
        load_source("builtin:emoji")
    with pytest.raises(DataError, match="images.npz"):
        load_source("builtin:emoji", root=str(tmp_path))
    with pytest.raises(DataError, match="text must be one of"):
        load_source("builtin:emoji?text=names", root=str(tmp_path))


def test_example_config_loads():
    root = shared_data("emoji_text")
    cfg = load_config(EXAMPLE, [f"data.root={root}"])
    assert cfg.modalities["text"].encoder.name == "minilm" and cfg.modalities["image"].kind == "image"


@pytest.mark.slow
def test_train_index_serve(tmp_path):
    from omnibind.index import Index
    from omnibind.serving import ServeSettings, create_app
    from omnibind.training.trainer import train

    root = shared_data("emoji_text")
    cfg = load_config(
        EXAMPLE,
        [
            f"data.root={root}",
            "data.source=builtin:emoji?limit=200",
            "train.epochs=2",
            "train.progress=false",
        ],
    )
    train(cfg, tmp_path / "run")
    index = Index.create(tmp_path / "index", tmp_path / "run")
    index.add(load_source("builtin:emoji?limit=50", root=str(root)).records)
    client = TestClient(create_app(index, ServeSettings()))
    r = client.post(
        "/v1/search", json={"text": "grinning face", "target": "image", "k": 5, "include_items": True}
    )
    assert r.status_code == 200 and len(r.json()["hits"]) == 5
    hit = r.json()["hits"][0]
    assert client.get(hit["item"]["image"]["url"]).headers["content-type"] == "image/png"
