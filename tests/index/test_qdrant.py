"""The Qdrant backend in Qdrant's embedded local mode (``qdrant+path://``): the same answers as the local
index on the same data and model (exact top 10 and scores, composed queries of a pairwise and a Symile
model, filters, more like this, adaptive top-k), two-stage recall, writes, the CLI and the HTTP app over it,
and every kind of bad input (URLs, an unreachable server, a missing API key, another model, a locked folder).

No Qdrant server binary comes from the package registries (PyPI, npm and Debian have clients only), so a
server is not tested here; the server paths are the same client calls with ``SearchParams``.
"""

from __future__ import annotations

import http.server
import json
import shutil
import socket
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from omnibind.cli.main import app
from omnibind.config import config_from_dict
from omnibind.data.record import Record
from omnibind.data.sources import load_source
from omnibind.errors import DataError
from omnibind.index import (
    Index,
    IndexStoreError,
    ModelMismatchError,
    Query,
    SearchResult,
    SearchSettings,
    UnknownItemError,
)
from omnibind.index.backends.qdrant_connection import parse_url
from omnibind.model import OmniModel
from tests.helpers import tiny_shapes_config

pytest.importorskip("qdrant_client", reason="the Qdrant backend needs qdrant-client (the dev extra has it)")

SOURCE = "builtin:shapes?n={n}&missing=0.2&image_size=16&seconds=0.25&seed={seed}"
TABLE = {"width": 0.2, "height": 0.2, "x": 0.3, "y": 0.5}
FILTERS = [
    {"colour": "red"},
    {"colour": {"ne": "red"}},
    {"colour": ["red", "blue"]},
    {"shape": {"in": ["circle", "square"]}},
    {"weight": {"gte": 3.0, "lt": 9.0}},
    {"weight": 1.85},  # a float equal to one item's
    {"mark": {"gt": 0}},
    {"batch": 1},  # a key only the odd items have
    {"batch": {"ne": 1}},  # ... items without it do not match "ne" either
    {"flag": True},
    {"colour": "red", "batch": {"in": [0, 2]}},
    {"colour": {"in": []}},  # matches nothing
]


def _model(tmp_path_factory, objective: str) -> Path:
    out = tmp_path_factory.mktemp(objective) / "model"
    OmniModel(config_from_dict(tiny_shapes_config(objective))).save(out)
    return out


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """A pairwise model (joint similarity "sum") and a Symile one ("mip"), random-init."""
    return {"sum": _model(tmp_path_factory, "infonce"), "mip": _model(tmp_path_factory, "symile")}


def _records(n: int = 40, seed: int = 7) -> list[Record]:
    records = load_source(SOURCE.format(n=n, seed=seed), modalities=["image", "caption", "sound", "table"])
    for i, r in enumerate(records.records):
        r.metadata = {"weight": round(i * 0.37, 2), **({"batch": i % 3, "flag": i % 4 == 1} if i % 2 else {})}
    return records.records


def _url(tmp_path: Path, name: str = "items") -> str:
    return f"qdrant+path://{tmp_path}/qdrant/{name}"


@pytest.fixture(scope="module", params=["sum", "mip"])
def pair(request, models, tmp_path_factory):
    """``(qdrant index, local index)`` holding the same 40 items, embedded by the same model (read only)."""
    model = models[request.param]
    tmp_path = tmp_path_factory.mktemp(f"pair-{request.param}")
    qdrant = Index.create(_url(tmp_path), model)
    local = Index.create(tmp_path / "local", model)
    for ix in (qdrant, local):
        ix.add(_records(), batch_size=16)
    assert qdrant.similarity == request.param
    yield qdrant, local
    qdrant.close()


def _same(got: SearchResult, want: SearchResult, atol: float = 1e-5) -> None:
    """Equal hits and scores; only items of equal score may change places (or, at the end of the list,
    be other items of that same score)."""
    assert got.stopped_because == want.stopped_because
    got_scores = np.array([h.score for h in got.hits])
    want_scores = np.array([h.score for h in want.hits])
    np.testing.assert_allclose(got_scores, want_scores, atol=atol)
    ours, theirs = {h.id: h for h in got.hits}, {h.id: h for h in want.hits}
    for item in set(ours) & set(theirs):
        assert (
            abs(ours[item].score - theirs[item].score) <= atol
            and ours[item].modality == theirs[item].modality
        )
        assert ours[item].metadata == theirs[item].metadata
    if len(want_scores):
        last = want_scores[-1] + atol
        assert {i for i, h in ours.items() if h.score > last} == {
            i for i, h in theirs.items() if h.score > last
        }


def test_exact_search_equals_the_local_index(pair):
    qdrant, local = pair
    vector = local.embedding(local.ids()[3], "image")
    queries = [
        {"caption": "a small red circle"},  # single
        {"table": TABLE},
        {"caption": "a red circle", "table": TABLE},  # composed: sum or product (Symile)
        {"caption": "a blue square", "image": np.full((16, 16, 3), 0.5, np.float32)},
        vector,
    ]
    for query in queries:
        for target in (None, "image", "caption", "sound"):
            _same(qdrant.search(query, target=target, k=10), local.search(query, target=target, k=10))
    result = qdrant.search(queries[0], k=10)
    assert result.method == "exact" and len(result.hits) == 10


@pytest.mark.parametrize("where", FILTERS, ids=[json.dumps(w) for w in FILTERS])
def test_filters_equal_the_local_index(pair, where):
    qdrant, local = pair
    for target in (None, "image"):
        got = qdrant.search({"caption": "a red circle"}, target=target, k=10, where=where)
        _same(got, local.search({"caption": "a red circle"}, target=target, k=10, where=where))
    everything = qdrant.search({"caption": "a circle"}, k=40, where=where)
    _same(everything, local.search({"caption": "a circle"}, k=40, where=where))
    assert qdrant.metadata_keys() == local.metadata_keys()


def test_more_like_this_and_adaptive_top_k_as_local(pair):
    qdrant, local = pair
    item = next(i for i in local.ids() if local.embedding(i, "image") is not None)
    for query in (Query(like=item), Query(like=item, like_modality="image")):
        got = qdrant.search(query, target="image", k=5)
        assert item not in [h.id for h in got.hits]
        _same(got, local.search(query, target="image", k=5))
    _same(
        qdrant.search(Query(like=item), k=5, where={"batch": 1}),
        local.search(Query(like=item), k=5, where={"batch": 1}),
    )
    full = local.search({"caption": "a red circle"}, target="image", k=10)
    cut = full.hits[3].score - 1e-6
    for kwargs in ({"min_score": cut}, {"max_gap": 0.01}, {"k": 10_000}):
        kwargs = {"k": 10, **kwargs}
        _same(
            qdrant.search({"caption": "a red circle"}, target="image", **kwargs),
            local.search({"caption": "a red circle"}, target="image", **kwargs),
        )
    np.testing.assert_allclose(qdrant.embedding(item, "image"), local.embedding(item, "image"), atol=0)
    queries = np.stack([local.embedding(h.id, "image") for h in full.hits[:3]])
    many, want = qdrant.search_many(queries, "caption", k=4), local.search_many(queries, "caption", k=4)
    assert [[i for i, _ in row] for row in many] == [[i for i, _ in row] for row in want]
    np.testing.assert_allclose(
        [[s for _, s in row] for row in many], [[s for _, s in row] for row in want], atol=1e-5
    )


def test_counts_ids_get_and_media_as_local(pair):
    qdrant, local = pair
    assert len(qdrant) == len(local) == 40 and qdrant.counts() == local.counts()
    assert qdrant.ids() == local.ids()  # insertion order
    for item in qdrant.ids()[:10]:
        assert qdrant.get(item) == local.get(item)
        for m in qdrant.modalities:
            assert qdrant.media(item, m) == local.media(item, m)
    images = [i for i in qdrant.ids() if qdrant.get(i)["modalities"].get("image", {}).get("has_bytes")]
    assert images and qdrant.media(images[0], "image")[:4] == b"\x89PNG"


def test_add_update_delete_and_reopen(models, tmp_path):
    url = _url(tmp_path)
    qdrant, local = Index.create(url, models["sum"]), Index.create(tmp_path / "local", models["sum"])
    records = _records()
    for ix in (qdrant, local):
        ix.add(records[:30], batch_size=8)
        ix.add(records[30:])
    with pytest.raises(DataError, match="already in the index"):
        qdrant.add(records[:1])
    # an update that drops a modality and a metadata key: the point is replaced whole
    changed = [
        Record(id=r.id, values={"caption": "a changed caption"}, metadata={"note": "new"})
        for r in records[:3]
    ]
    for ix in (qdrant, local):
        ix.update(changed)
        ix.delete([records[5].id, records[6].id])
    assert qdrant.embedding(records[0].id, "image") is None and qdrant.get(records[0].id)["metadata"] == {
        "note": "new"
    }
    assert qdrant.counts() == local.counts() and qdrant.metadata_keys() == local.metadata_keys()
    assert qdrant.ids() == local.ids() and len(qdrant) == 38
    with pytest.raises(UnknownItemError):
        qdrant.get(records[5].id)
    with pytest.raises(UnknownItemError):
        qdrant.delete(["nope"])
    _same(
        qdrant.search({"caption": "a changed caption"}, k=10),
        local.search({"caption": "a changed caption"}, k=10),
    )
    qdrant.compact()  # nothing to do for Qdrant
    qdrant.close()
    reopened = Index.open(url)
    assert reopened.counts() == local.counts() and reopened.metadata_keys() == local.metadata_keys()
    assert reopened.ids() == local.ids() and reopened.meta["model"] == local.meta["model"]
    _same(reopened.search({"caption": "a red circle"}, k=10), local.search({"caption": "a red circle"}, k=10))
    # every key of an item was deleted: no longer a known key
    reopened.delete([r.id for r in changed])
    assert "note" not in reopened.metadata_keys()
    reopened.close()


def test_media_from_a_file_path_is_read_when_asked(models, tmp_path):
    from PIL import Image

    picture = tmp_path / "red.png"
    Image.new("RGB", (16, 16), (200, 30, 30)).save(picture)
    with _closing(Index.create(_url(tmp_path), models["sum"])) as ix:
        ix.add([Record(id="file", values={"image": str(picture), "caption": "red"})])
        info = ix.get("file")["modalities"]["image"]
        assert info["path"] == str(picture.resolve()) and info["has_bytes"]
        assert ix.media("file", "image") == picture.read_bytes() and ix.media("file", "caption") is None
        picture.unlink()  # no copy was kept: the file is the media
        assert ix.media("file", "image") is None and not ix.get("file")["modalities"]["image"]["has_bytes"]


class _closing:
    def __init__(self, index: Index) -> None:
        self.index = index

    def __enter__(self) -> Index:
        return self.index

    def __exit__(self, *exc: object) -> None:
        self.index.close()


def _vector_model(tmp_path: Path, d: int) -> Path:
    cfg = {"modalities": {"vec": {"kind": "embedding", "dim": d}}, "model": {"dim": d}}
    return OmniModel(config_from_dict(cfg)).save(tmp_path / "model")


def test_a_write_killed_between_requests_leaves_whole_items(tmp_path, monkeypatch):
    url, n = _url(tmp_path), 600
    x = np.random.default_rng(1).standard_normal((n, 8)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ids = [f"v{i}" for i in range(n)]
    ix = Index.create(url, _vector_model(tmp_path, 8))
    sent, upsert = [], ix.backend.client.upsert

    def dies_after_one(*args, **kwargs):
        if sent:
            raise KeyboardInterrupt  # as a kill between two requests of one write
        sent.append(1)
        return upsert(*args, **kwargs)

    monkeypatch.setattr(ix.backend.client, "upsert", dies_after_one)
    with pytest.raises(KeyboardInterrupt):
        ix.add_embeddings(ids, {"vec": x}, metadata=[{"row": i} for i in range(n)])
    assert len(ix) == len(ix.ids()) == ix.counts()["vec"] == 256  # the first request, whole
    monkeypatch.undo()
    ix.close()
    reopened = Index.open(url)
    assert reopened.ids() == ids[:256] and reopened.counts() == {"vec": 256}
    assert all(reopened.get(i)["metadata"] == {"row": int(i[1:])} for i in ids[:256:50])
    np.testing.assert_allclose(reopened.embedding("v255", "vec"), x[255])
    reopened.add_embeddings(ids, {"vec": x}, metadata=[{"row": i} for i in range(n)], replace=True)  # redo
    assert len(reopened) == n and reopened.ids() == ids and reopened.metadata_keys() == ["row"]
    reopened.close()


def test_two_stage_recall_against_exact(tmp_path):
    rng = np.random.default_rng(0)
    n, d = 600, 16
    x = rng.standard_normal((n, d)).astype(np.float32) / np.sqrt(np.arange(1, d + 1))  # Matryoshka-like
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    model_dir = _vector_model(tmp_path, d)
    settings = SearchSettings(exact_threshold=100, prefix=8, shortlist=50)
    ids = [f"v{i}" for i in range(n)]
    with _closing(Index.create(_url(tmp_path), model_dir, settings)) as ix:
        ix.add_embeddings(ids, {"vec": x}, metadata=[{"even": i % 2 == 0} for i in range(n)])
        queries = x[:40] + 0.3 * rng.standard_normal((40, d)).astype(np.float32)
        truth = np.argsort(-(queries / np.linalg.norm(queries, axis=1, keepdims=True)) @ x.T, axis=1)[:, :10]
        found = [ix.search(q, target="vec", k=10) for q in queries]
        assert {r.method for r in found} == {"qdrant-two-stage"}
        recall = np.mean(
            [
                len({h.id for h in r.hits} & {ids[i] for i in t}) / 10
                for r, t in zip(found, truth, strict=True)
            ]
        )
        assert recall >= 0.9, recall
        filtered = ix.search(Query(like="v0"), target="vec", k=10, where={"even": True})
        assert "v0" not in [h.id for h in filtered.hits] and all(
            int(h.id[1:]) % 2 == 0 for h in filtered.hits
        )
        assert len(filtered.hits) == 10


# ---- the CLI and the HTTP app ----------------------------------------------------------------------
def test_cli_build_search_delete_round_trip(models, tmp_path):
    runner = CliRunner()
    url = _url(tmp_path)
    r = runner.invoke(
        app, ["index", "build", str(models["sum"]), "--data", SOURCE.format(n=30, seed=1), "--out", url]
    )
    assert r.exit_code == 0, r.output
    assert "committed 30 items" in r.output and "indexed 30 items" in r.output
    r = runner.invoke(
        app, ["search", url, "--text", "a red circle", "-k", "3", "--where", "colour=red", "--json"]
    )
    assert r.exit_code == 0, r.output
    body = json.loads(r.output)
    assert len(body["hits"]) == 3 and body["method"] == "exact"
    assert all(h["metadata"]["colour"] == "red" for h in body["hits"])
    top = body["hits"][0]["id"]
    r = runner.invoke(app, ["index", "delete", url, top])
    assert r.exit_code == 0 and "the index holds 29" in r.output, r.output
    r = runner.invoke(
        app, ["search", url, "--text", "a red circle", "-k", "3", "--where", "colour=red", "--json"]
    )
    assert top not in [h["id"] for h in json.loads(r.output)["hits"]]
    r = runner.invoke(app, ["index", "compact", url])
    assert r.exit_code == 0 and "29 items" in r.output, r.output


def test_http_app_answers_a_search(models, tmp_path):
    from fastapi.testclient import TestClient

    from omnibind.serving import ServeSettings, create_app

    local = Index.create(tmp_path / "local", models["sum"])
    local.add(_records())
    with _closing(Index.create(_url(tmp_path), models["sum"])) as qdrant:
        qdrant.add(_records())
        client = TestClient(create_app(qdrant, ServeSettings()))
        assert client.get("/healthz").json() == {"status": "ok", "items": 40}
        r = client.post(
            "/v1/search", json={"text": "a red circle", "target": "image", "k": 5, "where": {"colour": "red"}}
        )
        assert r.status_code == 200, r.text
        want = local.search({"caption": "a red circle"}, target="image", k=5, where={"colour": "red"})
        assert [h["id"] for h in r.json()["hits"]] == [h.id for h in want.hits]
        item = next(i for i in qdrant.ids() if "image" in qdrant.get(i)["modalities"])
        assert client.get(f"/v1/items/{item}/image").content.startswith(b"\x89PNG")


# ---- bad input -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "url, message",
    [
        ("qdrant://localhost:6333/", "no collection name"),
        ("qdrant://localhost:63x3/items", "bad port '63x3'"),
        ("qdrant://localhost:99999/items", "bad port '99999'"),
        ("qdrant:///items", "no host"),
        ("qdrant://localhost:6333/bad name", "collection name 'bad name'"),
        ("qdrant://localhost:6333/items?x=1", "no '?'"),
        ("qdrant+path://items", "qdrant+path://DIR/COLLECTION"),
        ("qdrant+path:///tmp/", "qdrant+path://DIR/COLLECTION"),
    ],
)
def test_bad_urls(url, message):
    with pytest.raises(IndexStoreError, match=message.replace("?", r"\?").replace("+", r"\+")):
        Index.open(url)


def test_urls_parsed():
    assert parse_url("qdrant://db.example:6334/items").server == "http://db.example:6334"
    assert parse_url("qdrants://db.example/items").server == "https://db.example:6333"
    assert (
        parse_url("qdrant://db.example:80/proxy/qdrant/items").server == "http://db.example:80/proxy/qdrant"
    )
    assert str(parse_url("qdrant+path://runs/q/items").path) == "runs/q"


def test_without_qdrant_client_the_error_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "qdrant_client", None)  # as if it were not installed
    with pytest.raises(IndexStoreError, match=r"needs qdrant-client: pip install 'omnibind\[qdrant\]'"):
        Index.open("qdrant://localhost:6333/items")


def test_unreachable_server_is_named_quickly():
    with socket.socket() as s:  # a loopback port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.perf_counter()
    with pytest.raises(
        IndexStoreError, match=rf"cannot reach the Qdrant server at qdrant://127.0.0.1:{port}/items"
    ):
        Index.open(f"qdrant://127.0.0.1:{port}/items")
    assert time.perf_counter() - t0 < 5


class _Refuses(http.server.BaseHTTPRequestHandler):
    """A server that needs an API key it never accepts: 401 to the keyless, 403 to a wrong key."""

    keys: list[str | None] = []

    def _answer(self) -> None:
        key = self.headers.get("api-key")
        self.keys.append(key)
        self.send_response(403 if key else 401)
        self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"status": {"error": "Must provide an API key or an Authorization bearer token"}}')

    do_GET = do_POST = do_PUT = do_DELETE = _answer

    def log_message(self, *args: object) -> None:
        return None


@pytest.fixture()
def refusing_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Refuses)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Refuses.keys = []
    yield f"qdrant://127.0.0.1:{server.server_address[1]}/items"
    server.shutdown()
    server.server_close()


def test_missing_or_refused_api_key(refusing_server, monkeypatch, tmp_path, models):
    monkeypatch.delenv("OMNIBIND_QDRANT_API_KEY", raising=False)
    monkeypatch.delenv("OMNIBIND_QDRANT_API_KEY_FILE", raising=False)
    with pytest.raises(
        IndexStoreError, match="401.*OMNIBIND_QDRANT_API_KEY, or OMNIBIND_QDRANT_API_KEY_FILE"
    ):
        Index.open(refusing_server)
    with pytest.raises(IndexStoreError, match="needs an API key"):
        Index.create(refusing_server, models["sum"])
    key_file = tmp_path / "key"
    key_file.write_text("  secret-from-file\n")
    monkeypatch.setenv("OMNIBIND_QDRANT_API_KEY_FILE", str(key_file))
    with (
        pytest.warns(UserWarning, match="insecure"),
        pytest.raises(
            IndexStoreError,
            match=f"403.*refused the API key from OMNIBIND_QDRANT_API_KEY_FILE \\({key_file}\\)",
        ),
    ):
        Index.open(refusing_server)
    assert _Refuses.keys[-1] == "secret-from-file"
    monkeypatch.setenv("OMNIBIND_QDRANT_API_KEY", "secret-from-env")
    with (
        pytest.warns(UserWarning),
        pytest.raises(IndexStoreError, match="refused the API key from OMNIBIND_QDRANT_API_KEY$"),
    ):
        Index.open(refusing_server)
    assert _Refuses.keys[-1] == "secret-from-env"
    monkeypatch.delenv("OMNIBIND_QDRANT_API_KEY")
    key_file.write_text("\n")
    with pytest.raises(IndexStoreError, match="the file is empty"):
        Index.open(refusing_server)


def test_second_client_on_a_locked_folder_is_refused(models, tmp_path):
    url = _url(tmp_path)
    first = Index.create(url, models["sum"])
    t0 = time.perf_counter()
    with pytest.raises(
        IndexStoreError, match=f"{tmp_path}/qdrant is already accessed by another instance.*Close the other"
    ):
        Index.open(url)
    assert time.perf_counter() - t0 < 5
    first.close()
    Index.open(url).close()


def test_collection_checks(models, tmp_path):
    from qdrant_client import QdrantClient
    from qdrant_client import models as qm

    url = _url(tmp_path)
    with pytest.raises(IndexStoreError, match="there is no folder"):
        Index.open(url)
    with pytest.raises(IndexStoreError, match="storage=int8 is a setting of the local index"):
        Index.create(url, models["sum"], SearchSettings(storage="int8"))
    Index.create(url, models["sum"]).close()
    with pytest.raises(IndexStoreError, match="already exists; open it, or choose another collection name"):
        Index.create(url, models["sum"])
    with pytest.raises(IndexStoreError, match=r"qdrant\+path://.*/other: no such collection; build one"):
        Index.open(_url(tmp_path, "other"))
    client = QdrantClient(path=str(tmp_path / "qdrant"))
    client.create_collection("foreign", vectors_config=qm.VectorParams(size=4, distance=qm.Distance.DOT))
    client.close()
    with pytest.raises(IndexStoreError, match="foreign is a Qdrant collection that omnibind did not make"):
        Index.open(_url(tmp_path, "foreign"))


def test_model_mismatch_refused(models, tmp_path):
    url = _url(tmp_path)
    moved = tmp_path / "model_copy"
    shutil.copytree(models["sum"], moved)
    index = Index.create(url, moved)
    index.close()
    with pytest.raises(ModelMismatchError, match="not the model this index was built with"):
        Index.open(url, model=models["mip"])
    # the model at the recorded path changed after building: `index add` refuses to embed with it
    other = tmp_path / "other"
    OmniModel(config_from_dict(tiny_shapes_config("infonce", seed=5))).save(other)
    shutil.copy(other / "model.safetensors", moved / "model.safetensors")
    r = CliRunner().invoke(app, ["index", "add", url, "--data", SOURCE.format(n=4, seed=3)])
    assert r.exit_code == 2 and "not the model this index was built with" in r.output, r.output
