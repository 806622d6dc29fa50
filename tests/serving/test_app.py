"""Every route of the service against a tiny trained model and a 60-item index, and every kind of bad
input or abuse answered with a 4xx JSON error that says what to do."""

from __future__ import annotations

import base64
import io
import shutil

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from omnibind.index import Index
from omnibind.serving import ApiKeys, ServeError, ServeSettings, create_app, load_key_file
from omnibind.serving.security import hash_key, is_loopback
from tests.serving.conftest import READ_KEY, WRITE_KEY


def _png(size: int = 16, colour=(200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buf, format="PNG")
    return buf.getvalue()


def _wav(seconds: float = 0.25, rate: int = 8000) -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    t = np.arange(int(seconds * rate)) / rate
    sf.write(buf, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), rate, format="WAV")
    return buf.getvalue()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture(scope="module")
def index(index_dir) -> Index:
    return Index.open(index_dir)


@pytest.fixture(scope="module")
def client(index) -> TestClient:
    return TestClient(create_app(index, ServeSettings()))


@pytest.fixture()
def keyed(writable_index) -> TestClient:
    keys = ApiKeys.from_keys(read=[READ_KEY], write=[WRITE_KEY])
    return TestClient(create_app(writable_index, ServeSettings(keys=keys)))


def _error(response, status: int, *words: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    message = body["error"]["message"]
    assert body["error"]["status"] == status and message
    for word in words:
        assert word.lower() in message.lower(), message
    return message


# ---- routes --------------------------------------------------------------------------------------
def test_health_info_and_docs(client, index):
    assert client.get("/healthz").json() == {"status": "ok", "items": 60}
    info = client.get("/v1/info").json()
    assert info["dim"] == index.dim and info["items"] == 60
    assert info["modalities"]["image"]["kind"] == "image"
    assert info["modalities"]["caption"]["count"] == index.counts()["caption"]
    assert info["writes_enabled"] is False and info["auth_required"] is False
    assert info["torch_threads"] == torch.get_num_threads()  # the process's own: create_app leaves them
    schema = client.get("/openapi.json").json()
    assert {"/v1/search", "/v1/embed", "/v1/items", "/v1/items/{item_id}"} <= set(schema["paths"])
    assert client.get("/docs").status_code == 200
    page = client.get("/")
    assert page.status_code == 200 and "omnibind" in page.text


def test_search_text_media_vector_like_and_adaptive(client, index):
    r = client.post("/v1/search", json={"text": "a red circle", "target": "image", "k": 5})
    assert r.status_code == 200, r.text
    body = r.json()
    expected = index.search({"caption": "a red circle"}, target="image", k=5)
    assert [h["id"] for h in body["hits"]] == [h.id for h in expected.hits]
    assert body["stopped_because"] == "k" and body["method"] == "exact"
    # composed: text + base64 image + an uploaded-by-vector query
    r = client.post(
        "/v1/search", json={"text": "a red circle", "media": {"image": _b64(_png())}, "target": "sound"}
    )
    assert r.status_code == 200 and all(h["modality"] == "sound" for h in r.json()["hits"])
    vector = index.embedding(expected.hits[0].id, "image").tolist()
    r = client.post("/v1/search", json={"vectors": {"": vector}, "target": "image", "k": 1})
    assert r.json()["hits"][0]["id"] == expected.hits[0].id
    first = expected.hits[0].id
    r = client.post("/v1/search", json={"like": first, "k": 3, "include_items": True})
    hits = r.json()["hits"]
    assert first not in [h["id"] for h in hits] and hits[0]["item"]
    r = client.post("/v1/search", json={"text": "a circle", "k": 50, "min_score": 0.99, "target": "image"})
    assert r.json()["stopped_because"] in ("min_score", "exhausted")
    r = client.post("/v1/search", json={"text": "a circle", "where": {"colour": "red"}, "k": 60})
    assert all(h["metadata"]["colour"] == "red" for h in r.json()["hits"])


def test_search_multipart_uploads(client):
    files = [("file", ("a.png", _png(), "image/png")), ("sound", ("b.wav", _wav(), "audio/wav"))]
    r = client.post("/v1/search", files=files, data={"text": "a red circle", "k": "4", "target": "image"})
    assert r.status_code == 200, r.text
    assert len(r.json()["hits"]) == 4


def test_embed_items_and_media(client, index):
    r = client.post("/v1/embed", json={"modality": "caption", "values": ["a red circle", "a blue square"]})
    vectors = np.array(r.json()["vectors"])
    assert vectors.shape == (2, index.dim) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-4)
    r = client.post("/v1/embed", json={"modality": "image", "media": [_b64(_png())]})
    assert r.status_code == 200 and len(r.json()["vectors"]) == 1
    item_id = next(i for i in index.ids() if "image" in index.get(i)["modalities"])
    item = client.get(f"/v1/items/{item_id}").json()
    assert item["id"] == item_id and item["modalities"]["image"]["url"]
    image = client.get(f"/v1/items/{item_id}/image")
    assert image.headers["content-type"] == "image/png" and image.content.startswith(b"\x89PNG")
    with_caption = next(i for i in index.ids() if "caption" in index.get(i)["modalities"])
    text = client.get(f"/v1/items/{with_caption}/caption")
    assert text.headers["content-type"].startswith("text/plain") and text.text
    with_sound = next(i for i in index.ids() if "sound" in index.get(i)["modalities"])
    assert client.get(f"/v1/items/{with_sound}/sound").headers["content-type"] == "audio/wav"


def test_add_and_delete_with_write_key(keyed):
    auth = {"Authorization": f"Bearer {WRITE_KEY}"}
    item = {
        "id": "new-1",
        "values": {"caption": "a green star"},
        "media": {"image": _b64(_png(16, (0, 200, 0)))},
    }
    item["metadata"] = {"colour": "green"}
    r = keyed.post("/v1/items", json={"items": [item]}, headers=auth)
    assert r.status_code == 201, r.text
    assert r.json() == {"added": 1, "ids": ["new-1"]}
    read = {"X-API-Key": READ_KEY}
    found = keyed.post("/v1/search", json={"like": "new-1", "like_modality": "image", "k": 60}, headers=read)
    assert found.status_code == 200
    assert keyed.get("/v1/items/new-1/image", headers=read).content.startswith(b"\x89PNG")
    assert keyed.delete("/v1/items/new-1", headers=auth).json() == {"deleted": "new-1"}
    _error(keyed.get("/v1/items/new-1", headers=read), 404, "new-1")
    _error(keyed.post("/v1/items", json={"items": [item, item]}, headers=auth), 400, "twice")


# ---- bad input and abuse -------------------------------------------------------------------------
def test_corrupt_upload(client):
    _error(
        client.post("/v1/search", json={"media": {"image": _b64(b"\x89PNG\r\n\x1a\nnot really")}}),
        400,
        "corrupt",
    )
    _error(client.post("/v1/search", json={"media": {"sound": _b64(b"RIFF....WAVEjunk")}}), 400, "corrupt")
    _error(client.post("/v1/search", json={"media": {"image": "%%% not base64"}}), 400, "base64")
    files = [("image", ("a.png", b"garbage bytes", "image/png"))]
    _error(client.post("/v1/search", files=files), 400, "corrupt")


def test_image_bomb(client):
    buf = io.BytesIO()
    Image.new("1", (6000, 6000)).save(buf, format="PNG")  # a few kB that would unpack to 36M pixels
    _error(client.post("/v1/search", json={"media": {"image": _b64(buf.getvalue())}}), 413, "pixels")


def test_oversized_upload(index):
    small = TestClient(create_app(index, ServeSettings(max_body_bytes=4096)))
    big = _b64(np.random.default_rng(0).bytes(10_000))
    _error(small.post("/v1/search", json={"media": {"image": big}}), 413, "larger than 4096")
    files = [("image", ("a.png", b"x" * 10_000, "image/png"))]
    _error(small.post("/v1/search", files=files), 413, "larger")


def test_wrong_media_type(client):
    _error(client.post("/v1/search", json={"media": {"image": _b64(_wav())}}), 415, "image")
    files = [("image", ("a.wav", _wav(), "audio/wav"))]
    _error(client.post("/v1/search", files=files), 415, "expected a image/*")
    _error(client.post("/v1/search", json={"media": {"table": _b64(_png())}}), 415, "json value")
    _error(client.post("/v1/search", files=[("file", ("a.txt", b"x", "video/mp4"))]), 415, "which modality")
    _error(client.post("/v1/search", content=b"text=hi", headers={"content-type": "text/plain"}), 415)
    _error(client.post("/v1/search", json={"values": {"image": "/etc/passwd"}}), 400, "send a file")
    _error(client.post("/v1/search", json={"text": "../secret.txt"}), 400, ".txt")


def test_unknown_modality_or_target(client):
    _error(client.post("/v1/search", json={"values": {"smell": "roses"}}), 400, "unknown", "smell")
    _error(client.post("/v1/search", json={"text": "a circle", "target": "smell"}), 400, "target", "smell")
    _error(client.post("/v1/embed", json={"modality": "smell", "values": ["x"]}), 400, "smell")
    _error(client.get("/v1/items/shapes-00/smell"), 400, "smell")


def test_unknown_metadata_key_is_a_400_naming_the_nearest(client, index):
    body = {"text": "a circle", "where": {"colr": "red"}}
    _error(client.post("/v1/search", json=body), 400, "unknown metadata key 'colr'", "colour")
    keys = index.metadata_keys()
    assert "colour" in keys and all(k in client.post("/v1/search", json=body).text for k in keys)
    # a key some items have is a real filter, even when nothing matches its value
    r = client.post("/v1/search", json={"text": "a circle", "where": {"colour": "mauve"}})
    assert r.status_code == 200 and r.json()["hits"] == []


@pytest.mark.parametrize("k", [0, -1, 10**6])
def test_bad_k(client, k):
    _error(client.post("/v1/search", json={"text": "a circle", "k": k}), 400, "k must be")


def test_bad_query_vector(client, index):
    _error(client.post("/v1/search", json={"vectors": {"": [0.1] * (index.dim + 1)}}), 400, "width")
    body = '{"vectors": {"": [NaN' + ", 0.1" * (index.dim - 1) + "]}}"
    r = client.post("/v1/search", content=body, headers={"content-type": "application/json"})
    _error(r, 400, "nan")
    _error(client.post("/v1/search", json={"vectors": {"": [0.0] * index.dim}}), 400, "zeros")
    _error(client.post("/v1/search", json={"vectors": {"": "abc"}}), 422, "vectors")
    _error(client.post("/v1/search", content=b"{not json", headers={"content-type": "application/json"}), 400)
    _error(client.post("/v1/search", json={}), 400, "at least one")
    _error(client.post("/v1/search", json={"text": "x", "where": {"size": {"near": 3}}}), 400, "operator")


def test_unknown_id(client):
    _error(client.get("/v1/items/no-such-item"), 404, "no-such-item")
    _error(client.get("/v1/items/no-such-item/image"), 404, "no-such-item")
    _error(client.post("/v1/search", json={"like": "no-such-item"}), 404, "no-such-item")
    _error(client.get("/v1/nothing-here"), 404, "no route")


def test_writes_need_a_write_key(client, keyed):
    item = {"items": [{"id": "x-1", "values": {"caption": "a circle"}}]}
    _error(client.post("/v1/items", json=item), 403, "writes are disabled")
    _error(client.delete("/v1/items/shapes-00"), 403, "writes are disabled")
    _error(keyed.post("/v1/items", json=item), 401, "api key")
    _error(
        keyed.post("/v1/items", json=item, headers={"X-API-Key": "wrong-key-0123456789"}), 401, "not valid"
    )
    _error(keyed.post("/v1/items", json=item, headers={"X-API-Key": READ_KEY}), 403, "only read")
    _error(keyed.delete("/v1/items/shapes-00", headers={"X-API-Key": READ_KEY}), 403, "write key")
    _error(keyed.post("/v1/search", json={"text": "a circle"}), 401, "read API key")
    assert (
        keyed.post("/v1/search", json={"text": "a circle"}, headers={"X-API-Key": READ_KEY}).status_code
        == 200
    )
    assert keyed.get("/healthz").status_code == 200


def test_bad_items_and_embeds(keyed, index):
    auth = {"X-API-Key": WRITE_KEY}

    def add(*items, **extra):
        return keyed.post("/v1/items", json={"items": list(items), **extra}, headers=auth)

    _error(add({"id": "x", "media": {"image": _b64(b"\x89PNG\r\n\x1a\nbroken")}}), 400, "corrupt")
    _error(add({"id": "x", "media": {"image": _b64(_wav())}}), 415, "image")
    _error(add({"id": "x", "values": {"smell": "roses"}}), 400, "unknown", "smell")
    _error(add({"id": "x"}), 400, "no values")
    _error(add(), 400, "send 1 to")
    _error(add(*[{"id": f"x{i}", "values": {"caption": "a"}} for i in range(65)]), 400, "send 1 to 64")
    _error(add({"id": "shapes-00", "values": {"caption": "a circle"}}), 400, "already in the index")
    _error(add({"id": "x", "values": {"caption": "a"}, "colour": "red"}), 422, "colour")
    _error(keyed.delete("/v1/items/no-such-item", headers=auth), 404, "no-such-item")
    read = {"X-API-Key": READ_KEY}
    many = {"modality": "caption", "values": ["a circle"] * 65}
    _error(keyed.post("/v1/embed", json=many, headers=read), 413, "at most 64")
    both = {"modality": "image", "values": [], "media": []}
    _error(keyed.post("/v1/embed", json=both, headers=read), 400, "exactly one")
    assert len(keyed.app.state.service.index) == len(index)  # nothing of the above was added


def test_deletes_need_a_valid_write_key(keyed):
    _error(keyed.delete("/v1/items/shapes-00"), 401, "write API key")
    _error(
        keyed.delete("/v1/items/shapes-00", headers={"X-API-Key": "wrong-key-0123456789"}), 401, "not valid"
    )
    bearer = {"Authorization": "Bearer wrong-key-0123456789"}
    _error(keyed.delete("/v1/items/shapes-00", headers=bearer), 401, "not valid")
    assert keyed.get("/v1/items/shapes-00", headers={"X-API-Key": READ_KEY}).status_code == 200


def test_model_index_mismatch(serving_run, index_dir, tmp_path):
    model_copy = tmp_path / "model"
    shutil.copytree(serving_run / "model", model_copy)
    index_copy = tmp_path / "index"
    shutil.copytree(index_dir, index_copy)
    import json

    meta = json.loads((index_copy / "index.json").read_text())
    meta["model"]["path"] = str(model_copy)
    (index_copy / "index.json").write_text(json.dumps(meta))
    weights = model_copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)  # same shape, other weights
    client = TestClient(create_app(Index.open(index_copy), ServeSettings()))
    _error(
        client.post("/v1/search", json={"text": "a circle"}), 409, "not the model this index was built with"
    )
    vector = [1.0] + [0.0] * (meta["dim"] - 1)
    assert client.post("/v1/search", json={"vectors": {"": vector}}).status_code == 200
    _error(client.post("/v1/embed", json={"modality": "caption", "values": ["a"]}), 409, "not the model")
    keyed = TestClient(
        create_app(Index.open(index_copy), ServeSettings(keys=ApiKeys.from_keys(write=[WRITE_KEY])))
    )
    item = {"items": [{"id": "new", "values": {"caption": "a circle"}}]}
    _error(keyed.post("/v1/items", json=item, headers={"X-API-Key": WRITE_KEY}), 409, "not the model")


def test_not_an_index_and_refusals(tmp_path):
    from typer.testing import CliRunner

    from omnibind.cli.main import app

    result = CliRunner().invoke(app, ["serve", str(tmp_path)])
    assert result.exit_code == 2 and "not an omnibind index" in result.output
    result = CliRunner().invoke(app, ["serve", str(tmp_path), "--host", "0.0.0.0"])
    assert result.exit_code == 2 and "only loopback" in result.output
    (tmp_path / "keys").write_text("admin x\n")
    result = CliRunner().invoke(app, ["serve", str(tmp_path), "--api-key-file", str(tmp_path / "keys")])
    assert result.exit_code == 2 and "expected 'read KEY'" in result.output
    with pytest.raises(ServeError, match="only loopback"):
        ServeSettings(host="0.0.0.0").check()
    ServeSettings(host="0.0.0.0", keys=ApiKeys.from_keys(read=[READ_KEY])).check()
    assert is_loopback("127.0.0.1") and is_loopback("::1") and not is_loopback("192.168.1.2")


def test_key_file(tmp_path):
    path = tmp_path / "keys"
    path.write_text(f"# keys\nread {READ_KEY}\nwrite sha256:{hash_key(WRITE_KEY)}  # hashed\n")
    keys = load_key_file(path)
    assert READ_KEY not in str(keys) and keys.role(READ_KEY) == "read" and keys.role(WRITE_KEY) == "write"
    assert keys.role("nope-nope-nope-nope") is None and keys.role(None) is None
    path.write_text("admin abcdefghijklmnopqrstuvwxyz\n")
    with pytest.raises(ServeError, match=":1: expected 'read KEY'"):
        load_key_file(path)
    path.write_text("read short\n")
    with pytest.raises(ServeError, match="at least 16"):
        load_key_file(path)
