"""Shared fixtures: one tiny trained model and a 60-item index, opened read-only or copied for writes."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from omnibind.config import config_from_dict
from omnibind.data.sources import load_source
from omnibind.index import Index
from omnibind.training.trainer import train
from tests.helpers import tiny_shapes_config

SOURCE = "builtin:shapes?n={n}&missing=0.2&image_size=16&seconds=0.25&seed={seed}"
READ_KEY, WRITE_KEY = "read-key-0123456789", "write-key-0123456789"


def shapes_records(modalities: list[str], n: int = 60, seed: int = 7) -> list:
    return load_source(SOURCE.format(n=n, seed=seed), modalities=modalities).records


@pytest.fixture(scope="session")
def serving_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("serving") / "run"
    train(config_from_dict(tiny_shapes_config("infonce", n=96, epochs=1, threads=1)), out)
    return out


@pytest.fixture(scope="session")
def index_dir(serving_run, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("serving-index") / "index"
    index = Index.create(path, serving_run)
    index.add(shapes_records(index.modalities), batch_size=64)
    return path


@pytest.fixture()
def writable_index(index_dir, tmp_path) -> Index:
    """A private copy of the index, for tests that add or delete."""
    copy = tmp_path / "index"
    shutil.copytree(index_dir, copy)
    return Index.open(copy)
