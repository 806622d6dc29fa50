"""The local index's memory-mapped vector log: quantized first stages, readers in other processes, crashes."""

from __future__ import annotations

import json
import multiprocessing as mp
import shutil
from pathlib import Path

import numpy as np
import pytest

from omnibind.config import config_from_dict
from omnibind.index import Index, SearchError, SearchSettings
from omnibind.index import vectors as vlog
from omnibind.model import OmniModel

D = 32


def _unit(n: int, seed: int) -> np.ndarray:
    """Clustered unit vectors with a decaying spectrum (ranks are close: a fair test of quantization)."""
    rng = np.random.default_rng(seed)
    scale = (1.0 / np.sqrt(np.arange(1, D + 1))).astype(np.float32)
    centres = np.random.default_rng(0).standard_normal((50, D)).astype(np.float32) * scale
    x = centres[rng.integers(0, 50, n)] + 0.4 * rng.standard_normal((n, D)).astype(np.float32) * scale
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    model = OmniModel(
        config_from_dict({"modalities": {"vec": {"kind": "embedding", "dim": D}}, "model": {"dim": D}})
    )
    return model.save(tmp_path_factory.mktemp("model") / "model")


def _index(path: Path, model_dir: Path, n: int, storage: str = "float32", **kw) -> Index:
    ix = Index.create(path, model_dir, SearchSettings(storage=storage, **kw))
    x = _unit(n, seed=1)
    for start in range(0, n, 1000):
        stop = min(start + 1000, n)
        ix.add_embeddings(
            [f"v{i}" for i in range(start, stop)],
            {"vec": x[start:stop]},
            metadata=[{"group": i % 7} for i in range(start, stop)],
        )
    return ix


@pytest.mark.parametrize("storage", ["int8", "float16"])
def test_quantized_first_stage_recall_and_exact_scores(tmp_path, model_dir, storage):
    n = 5000
    ix = _index(tmp_path / "ix", model_dir, n, storage, rerank=100)
    exact = Index.open(tmp_path / "ix", settings=SearchSettings(storage=storage, rerank=n))  # re-rank all
    x = _unit(n, seed=1)
    queries = _unit(40, seed=9)
    recall = []
    for q in queries:
        got = ix.search(q, target="vec", k=10)
        assert got.method == storage
        truth = np.argsort(-(x @ q), kind="stable")[:10]
        recall.append(len({h.id for h in got.hits} & {f"v{i}" for i in truth}) / 10)
        for h in got.hits:  # scores are re-computed from the float32 rows: exact, not approximate
            assert h.score == pytest.approx(float(x[int(h.id[1:])] @ q), abs=1e-5)
        assert [h.id for h in exact.search(q, target="vec", k=10).hits] == [f"v{i}" for i in truth]
    assert np.mean(recall) >= 0.98
    filtered = ix.search(queries[0], target="vec", k=5, where={"group": 3})
    assert filtered.hits and all(h.metadata["group"] == 3 for h in filtered.hits)
    files = {p.name: p.stat().st_size for p in vlog.current(tmp_path / "ix").iterdir()}
    code_bytes = files["vec.i8"] if storage == "int8" else files["vec.f16"]
    assert code_bytes == n * D * (1 if storage == "int8" else 2) and files["vec.f32"] == n * D * 4


def test_a_reader_sees_other_writers_commits_whole(tmp_path, model_dir):
    writer = _index(tmp_path / "ix", model_dir, 300)
    reader = Index.open(tmp_path / "ix")
    x = _unit(300, seed=1)
    new = _unit(5, seed=3)
    writer.add_embeddings([f"n{i}" for i in range(5)], {"vec": new})
    assert reader.search(new[0], target="vec", k=1).hits[0].id == "n0"  # the next search looks
    assert len(reader) == 305 and reader.backend.has("n4")
    writer.delete(["v0", "n0"])
    assert reader.search(x[0], target="vec", k=1).hits[0].id != "v0"
    assert len(reader) == 303
    writer.add_embeddings(["v1"], {"vec": -x[1][None]}, replace=True)  # an update replaces the vector
    hit = reader.search(-x[1], target="vec", k=1).hits[0]
    assert hit.id == "v1" and hit.score == pytest.approx(1.0, abs=1e-5)
    assert reader.ids().count("v1") == 1
    # the reader may write too: it first takes the writer's commits, then appends after them
    reader.add_embeddings(["r0"], {"vec": new[1:2]})
    with pytest.raises(Exception, match="already in the index"):
        writer.add_embeddings(["r0"], {"vec": new[1:2]})
    assert len(Index.open(tmp_path / "ix")) == 304


def _writer(path: str, batches: int, size: int, done: mp.Event) -> None:  # runs in a spawned process
    ix = Index.open(path)
    x = _unit(batches * size, seed=5)
    for b in range(batches):
        ids = [f"w{b}-{i}" for i in range(size)]
        ix.add_embeddings(ids, {"vec": x[b * size : (b + 1) * size]})
    done.set()


def test_readers_in_other_processes_never_see_half_a_batch(tmp_path, model_dir):
    _index(tmp_path / "ix", model_dir, 100)
    reader = Index.open(tmp_path / "ix")
    ctx = mp.get_context("spawn")
    done = ctx.Event()
    proc = ctx.Process(target=_writer, args=(str(tmp_path / "ix"), 8, 37, done))
    proc.start()
    seen = set()
    q = _unit(1, seed=2)[0]
    while not done.is_set() or proc.is_alive():
        reader.search(q, target="vec", k=3)
        seen.add(len(reader))
        if not proc.is_alive():
            break
    proc.join(60)
    reader.search(q, target="vec", k=3)
    seen.add(len(reader))
    assert proc.exitcode == 0
    assert len(seen) >= 3, seen  # it saw the log grow while it was written
    assert all((count - 100) % 37 == 0 for count in seen), seen  # whole batches only
    assert max(seen) == 100 + 8 * 37


def test_a_writer_killed_mid_batch_loses_nothing_committed(tmp_path, model_dir, monkeypatch):
    ix = _index(tmp_path / "ix", model_dir, 200)
    store = ix.backend.store

    def boom(rows):  # the log's tail is written, the table commit never happens
        raise OSError("killed")

    monkeypatch.setattr(store, "append", boom)
    with pytest.raises(OSError):
        ix.add_embeddings(["lost"], {"vec": _unit(1, seed=4)})
    monkeypatch.undo()
    reopened = Index.open(tmp_path / "ix")
    assert len(reopened) == 200 and not reopened.backend.has("lost")
    reopened.add_embeddings(["next"], {"vec": _unit(1, seed=4)})  # cuts the stale tail, appends after it
    again = Index.open(tmp_path / "ix")
    assert len(again) == 201 and again.backend.has("next") and not again.backend.has("lost")
    root = vlog.current(tmp_path / "ix")
    assert (root / "vec.f32").stat().st_size == 201 * D * 4


def test_a_log_behind_its_table_is_rebuilt(tmp_path, model_dir, monkeypatch):
    ix = _index(tmp_path / "ix", model_dir, 200, storage="int8")
    before = vlog.current(tmp_path / "ix")
    monkeypatch.setattr(vlog.VectorLog, "commit", lambda self, state, version: None)  # killed after the table
    ix.add_embeddings(["late"], {"vec": _unit(1, seed=4)})
    monkeypatch.undo()
    reopened = Index.open(tmp_path / "ix")  # the log says one version less than the table: rebuilt from it
    assert vlog.current(tmp_path / "ix") != before and not before.exists()
    assert len(reopened) == 201 and reopened.backend.has("late")
    assert json.loads((vlog.current(tmp_path / "ix") / "state.json").read_text())["storage"] == "int8"


def test_an_index_without_a_log_gets_one_and_compact_drops_tombstones(tmp_path, model_dir):
    ix = _index(tmp_path / "ix", model_dir, 300)
    q = _unit(1, seed=2)[0]
    want = [h.id for h in ix.search(q, target="vec", k=10, where={"group": {"in": [1, 2]}}).hits]
    shutil.rmtree(vlog.current(tmp_path / "ix"))
    (tmp_path / "ix" / vlog.POINTER).unlink()  # as an index from before the log existed
    old = Index.open(tmp_path / "ix")
    assert [h.id for h in old.search(q, target="vec", k=10, where={"group": {"in": [1, 2]}}).hits] == want
    reader = Index.open(tmp_path / "ix")
    old.delete([f"v{i}" for i in range(100)])
    old.compact()
    state = json.loads((vlog.current(tmp_path / "ix") / "state.json").read_text())
    assert state["items"] == 200 and state["dead"] == 0
    assert len(reader) == 200 and len(reader.search(q, target="vec", k=10).hits) == 10  # the new log
    assert reader.metadata_keys() == ["group"]


def test_bad_storage_refused(tmp_path, model_dir):
    with pytest.raises(SearchError, match="storage must be one of float32, float16, int8"):
        SearchSettings(storage="int4")
    with pytest.raises(SearchError, match="rerank must be"):
        SearchSettings(rerank=0)


def test_file_rows_reads_what_an_array_holds(tmp_path):
    """The re-rank reader (pread, not a map) answers every index form the search uses like the array."""
    x = _unit(300, seed=4)
    path = tmp_path / "m.f32"
    path.write_bytes(x.tobytes())
    rows = vlog.FileRows(path, 300, D)
    assert rows.shape == x.shape and len(rows) == 300
    for key in (0, 299, -1, slice(10, 50), slice(None), np.array([5, 6, 7, 100, 2, 3]), np.array([], int)):
        assert np.array_equal(rows[key], x[key]), key
    with pytest.raises(IndexError):
        rows[300]
    with pytest.raises(IndexError):
        rows[np.array([1, 300])]


def test_quantized_storage_rereads_float32_rows_without_mapping_them(tmp_path, model_dir):
    """With an int8 or float16 first stage the float32 file is read by ``pread``: a scattered shortlist
    would otherwise map (and count as the process's own) page-cache folios around every row."""
    ix = _index(tmp_path / "ix", model_dir, 500, storage="int8", exact_threshold=10)
    s = ix.backend._sets["vec"]
    assert isinstance(s.vectors, vlog.FileRows) and isinstance(s.codes, np.memmap)
    x = _unit(500, seed=1)
    assert np.array_equal(ix.backend.embedding("v7", "vec"), x[7])
    maps = Path("/proc/self/maps").read_text().splitlines()
    assert not [m for m in maps if str(tmp_path) in m and m.rstrip().endswith("vec.f32")]
    assert [m for m in maps if str(tmp_path) in m and m.rstrip().endswith("vec.i8")]


@pytest.mark.parametrize("storage", ["float32", "int8"])
def test_search_batch_gives_the_hits_of_search(tmp_path, model_dir, storage):
    """One matrix product for many queries (float32, exact scan) or one search each (int8): the same hits,
    per-row k, deleted items left out, metadata and stop reasons included."""
    ix = _index(tmp_path / "ix", model_dir, 3000, storage=storage)
    ix.delete(["v3", "v10"])
    queries = _unit(24, seed=9)
    queries[0] = _unit(3000, seed=1)[3]  # the deleted item's own vector
    ks = [10] * 12 + [1] * 6 + [25] * 6
    batch = ix.search_batch(queries, "vec", ks)
    for q, k, got in zip(queries, ks, batch, strict=True):
        want = ix.search(q, target="vec", k=k)
        assert [h.id for h in got.hits] == [h.id for h in want.hits]
        np.testing.assert_allclose([h.score for h in got.hits], [h.score for h in want.hits], atol=1e-6)
        assert [h.metadata for h in got.hits] == [h.metadata for h in want.hits]
        assert (got.stopped_because, got.method) == (want.stopped_because, want.method)
    assert "v3" not in {h.id for r in batch for h in r.hits}
    with pytest.raises(SearchError, match="k must be"):
        ix.search_batch(queries[:2], "vec", [10, 0])
    with pytest.raises(SearchError, match="2 values for 3"):
        ix.search_batch(queries[:3], "vec", [10, 10])
    assert ix.search_batch(np.zeros((0, D), np.float32), "vec") == []
