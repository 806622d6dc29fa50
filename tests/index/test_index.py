"""Index: round trip, filters, composed and item queries, adaptive top-k, HNSW, bad input, model identity."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from omnibind.config import config_from_dict
from omnibind.data.sources import load_source
from omnibind.errors import DataError
from omnibind.evaluation.retrieval import joint_scores
from omnibind.index import (
    Index,
    IndexStoreError,
    ModelMismatchError,
    Query,
    SearchError,
    SearchSettings,
    UnknownItemError,
    parse_where,
)
from omnibind.index.search import adaptive_cut
from omnibind.training.trainer import train
from tests.helpers import tiny_shapes_config

SOURCE = "builtin:shapes?n={n}&missing=0.2&image_size=16&seconds=0.25&seed={seed}"


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "run"
    train(config_from_dict(tiny_shapes_config("infonce", n=96, epochs=1, threads=1)), out)
    return out


def _records(run: Path, n: int = 40, seed: int = 7):
    from omnibind.model import OmniModel

    mods = list(OmniModel.load(run / "model").modalities)
    return load_source(SOURCE.format(n=n, seed=seed), modalities=mods).records


@pytest.fixture()
def index(run, tmp_path) -> Index:
    ix = Index.create(tmp_path / "index", run)
    ix.add(_records(run), batch_size=16)
    return ix


def test_round_trip_add_search_get_delete_update_compact(index, run, tmp_path):
    assert len(index) == 40
    result = index.search({"caption": "a red circle"}, target="image", k=5)
    assert len(result.hits) == 5 and result.stopped_because == "k" and result.method == "exact"
    assert all(h.modality == "image" for h in result.hits)
    scores = [h.score for h in result.hits]
    assert scores == sorted(scores, reverse=True)
    item = index.get("shapes-00")
    assert item["metadata"]["colour"] and set(item["modalities"]) <= set(index.modalities)
    # reopen: same answer
    again = Index.open(tmp_path / "index").search({"caption": "a red circle"}, target="image", k=5)
    assert [h.id for h in again.hits] == [h.id for h in result.hits]
    # delete: visible to the next query and after reopening
    top = result.hits[0].id
    index.delete([top])
    assert top not in [h.id for h in index.search({"caption": "a red circle"}, target="image", k=5).hits]
    with pytest.raises(UnknownItemError):
        index.get(top)
    reopened = Index.open(tmp_path / "index")
    assert len(reopened) == 39 and top not in reopened.ids()
    # update: same id, new content and metadata
    rec = _records(run, n=40, seed=7)[1]
    rec.metadata = {"note": "updated"}
    reopened.update([rec])
    assert len(reopened) == 39 and reopened.get(rec.id)["metadata"]["note"] == "updated"
    assert Index.open(tmp_path / "index").get(rec.id)["metadata"]["note"] == "updated"
    # add of an existing id is refused; a new one works without a rebuild
    with pytest.raises(DataError, match="already in the index"):
        reopened.add([rec])
    reopened.compact()
    assert len(Index.open(tmp_path / "index")) == 39


def test_media_bytes_and_raw_values_kept(index):
    item = index.get("shapes-00")
    for m, info in item["modalities"].items():
        if index.kinds[m] in ("image", "audio"):
            assert info["has_bytes"]
            data = index.media("shapes-00", m)
            assert data[:4] in (b"\x89PNG", b"RIFF")
        if index.kinds[m] == "text":
            assert isinstance(info["value"], str) and info["value"]


def test_filters_before_ranking(index):
    result = index.search({"caption": "a circle"}, k=40, where={"colour": "red"})
    assert result.hits and all(h.metadata["colour"] == "red" for h in result.hits)
    where = parse_where(["colour=red,blue", "mark>=1"])
    assert where == {"colour": {"in": ["red", "blue"]}, "mark": {"gte": 1}}
    hits = index.search({"caption": "a circle"}, k=40, where=where).hits
    assert hits and all(h.metadata["colour"] in ("red", "blue") and h.metadata["mark"] >= 1 for h in hits)
    assert index.search({"caption": "x"}, k=5, where={"colour": "no-such"}).stopped_because == "exhausted"
    with pytest.raises(SearchError, match="unknown operator"):
        index.search({"caption": "x"}, where={"mark": {"between": 1}})


def test_composed_query_uses_joint_similarity(index):
    model = index.model
    q = {"caption": "a small red circle", "table": {"width": 0.2, "height": 0.2, "x": 0.3, "y": 0.5}}
    result = index.search(q, target="image", k=5)
    qs = [model.embed([v], m) for m, v in q.items()]
    ids = [i for i in index.ids() if index.embedding(i, "image") is not None]
    targets = torch.from_numpy(np.stack([index.embedding(i, "image") for i in ids]))
    expected = joint_scores(qs, targets, index.similarity)[0]
    order = torch.argsort(expected, descending=True)[:5]
    assert [h.id for h in result.hits] == [ids[i] for i in order.tolist()]
    np.testing.assert_allclose([h.score for h in result.hits], expected[order].numpy(), atol=1e-5)


def test_vector_and_more_like_this(index):
    item = next(i for i in index.ids() if index.embedding(i, "image") is not None)
    vec = index.embedding(item, "image")
    assert index.search(vec, target="image", k=1).hits[0].id == item
    like = index.search(Query(like=item, like_modality="image"), target="image", k=3)
    assert item not in [h.id for h in like.hits] and len(like.hits) == 3


def test_adaptive_top_k(index):
    full = index.search({"caption": "a red circle"}, target="image", k=10)
    cut = full.hits[3].score - 1e-6
    res = index.search({"caption": "a red circle"}, target="image", k=10, min_score=cut)
    assert len(res.hits) == 4 and res.stopped_because == "min_score"
    assert adaptive_cut([0.9, 0.85, 0.5, 0.45], 10, None, 0.2) == (2, "gap")
    assert adaptive_cut([0.9, 0.8], 2, None, None) == (2, "k")
    assert adaptive_cut([0.9], 5, 0.1, 0.5) == (1, "exhausted")
    assert index.search({"caption": "a"}, target="image", k=10_000).stopped_because == "exhausted"


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"query": {"smell": "x"}}, "unknown query modality 'smell'"),
        ({"query": {"caption": "x"}, "target": "smell"}, "unknown target modality 'smell'"),
        ({"query": {"caption": "x"}, "k": 0}, "k must be an integer from 1 to 10000"),
        ({"query": {"caption": "x"}, "k": 1_000_000}, "k must be an integer"),
        ({"query": np.ones(5)}, "width 16"),
        ({"query": np.full(16, np.nan)}, "NaN"),
        ({"query": np.zeros(16)}, "all zeros"),
        ({"query": {"image": "/no/such/file.png"}}, "query value for 'image'"),
        ({"query": {"caption": "x"}, "min_score": float("nan")}, "min_score"),
    ],
)
def test_bad_queries(index, kwargs, match):
    query = kwargs.pop("query")
    with pytest.raises(SearchError, match=match):
        index.search(query, **kwargs)


def test_unknown_ids(index):
    with pytest.raises(UnknownItemError, match="no item with id 'nope'"):
        index.search(Query(like="nope"))
    with pytest.raises(UnknownItemError):
        index.delete(["nope"])


def test_not_an_index(tmp_path):
    with pytest.raises(IndexStoreError, match="is not an omnibind index"):
        Index.open(tmp_path)
    (tmp_path / "index.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(IndexStoreError, match="unknown format"):
        Index.open(tmp_path)


def test_model_mismatch_refused(index, run, tmp_path):
    other = tmp_path / "other"
    train(config_from_dict(tiny_shapes_config("infonce", n=64, epochs=1, threads=1, seed=5)), other)
    with pytest.raises(ModelMismatchError, match="not the model this index was built with"):
        Index.open(index.path, model=other)
    # the model at the recorded path changed after indexing: raw-value queries are refused
    moved = tmp_path / "model_copy"
    shutil.copytree(run / "model", moved)
    ix = Index.create(tmp_path / "ix2", moved)
    shutil.copy(other / "model" / "model.safetensors", moved / "model.safetensors")
    reopened = Index.open(tmp_path / "ix2")
    with pytest.raises(ModelMismatchError):
        reopened.search({"caption": "x"})
    assert ix.search(np.ones(16), k=1).stopped_because == "exhausted"  # vectors need no model


def test_in_memory_model_is_saved_with_the_index(run, tmp_path):
    from omnibind.model import OmniModel

    Index.create(tmp_path / "ix", OmniModel.load(run / "model"))
    assert (tmp_path / "ix" / "model" / "config.json").is_file()
    Index.open(tmp_path / "ix", model=run / "model")  # same weights, same identity


def test_hnsw_two_stage_matches_exact_on_small_data(tmp_path):
    rng = np.random.default_rng(0)
    n, d = 600, 16
    scale = 1.0 / np.sqrt(np.arange(1, d + 1))  # decaying spectrum: a Matryoshka-like prefix
    x = rng.standard_normal((n, d)).astype(np.float32) * scale
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ids = [f"v{i}" for i in range(n)]
    from omnibind.config import config_from_dict as cfd
    from omnibind.model import OmniModel

    model = OmniModel(cfd({"modalities": {"vec": {"kind": "embedding", "dim": d}}, "model": {"dim": d}}))
    settings = SearchSettings(exact_threshold=100, prefix=8, shortlist=200, ef_search=200)
    ix = Index.create(tmp_path / "ix", model, settings)
    ix.add_embeddings(ids[:300], {"vec": x[:300]})
    assert ix.backend._sets["vec"].hnsw is None  # over the threshold, but no search yet: adds never build it
    assert ix.search(x[0], target="vec", k=1).method == "hnsw"  # the first search builds the graph
    ix.add_embeddings(ids[300:], {"vec": x[300:]})  # ... which then takes new rows
    assert ix.backend._sets["vec"].hnsw.get_current_count() == n
    reopened = Index.open(tmp_path / "ix")
    assert reopened.backend._sets["vec"].hnsw is None
    reopened.build_graphs()
    assert reopened.backend._sets["vec"].hnsw.get_current_count() == n
    ix.delete(ids[:10])
    exact = Index.open(tmp_path / "ix", settings=SearchSettings(exact_threshold=10**9))
    for q in x[10:30]:
        got = ix.search(q, target="vec", k=10)
        want = exact.search(q, target="vec", k=10)
        assert got.method == "hnsw" and want.method == "exact"
        assert [h.id for h in got.hits] == [h.id for h in want.hits]
        assert not {h.id for h in got.hits} & set(ids[:10])
    many = exact.search_many(x[10:13], "vec", k=5)
    assert [m[0][0] for m in many] == ["v10", "v11", "v12"]
    with pytest.raises(
        SearchError, match="unknown metadata key 'nothing'.*no item of this index has metadata"
    ):
        ix.search(x[50], target="vec", k=5, where={"nothing": 1})
