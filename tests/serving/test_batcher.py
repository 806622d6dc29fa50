"""Dynamic batching of encoder calls: each caller gets its own vector (as if embedded alone), a bad value
fails only its own caller, the service answers as without batching, and the settings are checked."""

from __future__ import annotations

import base64
import io
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from omnibind.index import Index
from omnibind.serving import ServeError, ServeSettings, create_app
from omnibind.serving.batcher import Batcher
from omnibind.serving.errors import ApiError

TEXTS = [f"a {c} {s}" for c in ("red", "green", "blue", "yellow") for s in ("circle", "square", "star")]


@pytest.fixture(scope="module")
def index(index_dir) -> Index:
    return Index.open(index_dir)


@pytest.fixture(scope="module")
def model(index):
    model = index.model
    model.eval()
    return model


def _together(n: int, call):
    """``call(i)`` from ``n`` threads released at once; returns the results (or exceptions) in order."""
    barrier = threading.Barrier(n)

    def run(i: int):
        barrier.wait()
        try:
            return call(i)
        except Exception as exc:  # noqa: BLE001 - returned for the test to inspect
            return exc

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(run, range(n)))


def _alone(model, value, modality: str = "caption") -> np.ndarray:
    with torch.no_grad():
        return model.embed([value], modality).numpy()[0]


# ---- the batcher ---------------------------------------------------------------------------------
def test_concurrent_callers_get_their_own_vectors_in_shared_batches(model):
    batcher = Batcher(model.embed, wait_ms=50, max_batch=64)
    try:
        got = _together(len(TEXTS), lambda i: batcher.submit("caption", TEXTS[i]).result(timeout=30))
    finally:
        batcher.close()
    for text, vector in zip(TEXTS, got, strict=True):
        assert isinstance(vector, np.ndarray), vector
        np.testing.assert_allclose(vector, _alone(model, text), atol=1e-5)
    stats = batcher.stats()
    assert stats.values == len(TEXTS) and stats.largest > 1 and stats.batches < len(TEXTS)
    assert stats.mean == stats.values / stats.batches


def test_a_bad_value_fails_only_its_caller(model):
    with pytest.raises(ValueError) as alone:
        model.embed([5.0], "caption")
    sizes: list[int] = []

    def embed(values, modality):
        sizes.append(len(values))  # failed calls too
        return model.embed(values, modality)

    batcher = Batcher(embed, wait_ms=50, max_batch=64)
    values = [*TEXTS[:7], 5.0, *TEXTS[7:]]
    try:
        got = _together(len(values), lambda i: batcher.submit("caption", values[i]).result(timeout=30))
    finally:
        batcher.close()
    assert max(sizes) > 1  # the bad value shared a call with good ones, which were then retried
    if len(sizes) > 1 and sizes[0] == len(values):  # all in one call: halved, not retried one by one
        assert len(sizes) <= 2 * len(values).bit_length() + 1 and sorted(sizes)[-2] > 1
    bad = got.pop(7)
    assert type(bad) is type(alone.value) and str(bad) == str(alone.value)
    for text, vector in zip(TEXTS, got, strict=True):
        np.testing.assert_allclose(vector, _alone(model, text), atol=1e-5)


def test_modalities_are_embedded_in_separate_calls():
    calls: list[tuple[str, int]] = []

    def embed(values, modality):
        calls.append((modality, len(values)))
        return torch.tensor([[float(v), 1.0] for v in values])

    batcher = Batcher(embed, wait_ms=50, max_batch=64)
    try:
        got = _together(6, lambda i: batcher.submit("ab"[i % 2], i).result(timeout=10))
    finally:
        batcher.close()
    assert [row[0] for row in got] == list(range(6))
    assert sum(n for _, n in calls) == 6 and {m for m, _ in calls} == {"a", "b"} and len(calls) < 6


def test_max_batch_and_close():
    sizes: list[int] = []
    release = threading.Event()

    def embed(values, modality):
        release.wait(10)
        sizes.append(len(values))
        return torch.ones(len(values), 3)

    batcher = Batcher(embed, wait_ms=1000, max_batch=4)
    answers = [batcher.submit("a", i) for i in range(10)]
    release.set()
    assert all(a.result(timeout=10).shape == (3,) for a in answers)
    assert max(sizes) <= 4 and sum(sizes) == 10
    late = batcher.submit("a", 0)  # waits up to 1 s for company, but close does not wait for that
    batcher.close(timeout=5)
    assert late.result(timeout=0).shape == (3,)
    with pytest.raises(ApiError, match="shutting down") as refused:
        batcher.submit("a", 1)
    assert refused.value.status == 503
    batcher.start()  # a lifespan starting again
    assert batcher.submit("a", 2).result(timeout=10).shape == (3,)
    batcher.close()


def test_a_lone_request_does_not_wait():
    batcher = Batcher(lambda v, m: torch.ones(len(v), 2), wait_ms=5000, max_batch=4, in_flight=lambda: 1)
    try:
        t0 = time.monotonic()
        batcher.submit("a", 0).result(timeout=10)
        assert time.monotonic() - t0 < 2  # not the 5 s wait: no other request is being answered
    finally:
        batcher.close()


def test_bad_settings():
    with pytest.raises(ValueError, match="wait_ms"):
        Batcher(lambda v, m: torch.zeros(len(v), 2), wait_ms=0, max_batch=4)


# ---- the service ---------------------------------------------------------------------------------
def _png(colour=(200, 30, 30)) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), colour).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


@pytest.fixture(scope="module")
def clients(index):
    """The same index served without batching and with it (a long wait, so threads share batches)."""
    with (
        TestClient(create_app(index, ServeSettings(batch_wait_ms=0))) as off,
        TestClient(create_app(index, ServeSettings(batch_wait_ms=50))) as on,
    ):
        yield off, on


def _same_hits(a, b) -> None:
    assert a.status_code == b.status_code == 200, (a.text, b.text)
    hits_a, hits_b = a.json()["hits"], b.json()["hits"]
    assert [h["id"] for h in hits_a] == [h["id"] for h in hits_b]
    np.testing.assert_allclose([h["score"] for h in hits_a], [h["score"] for h in hits_b], atol=1e-5)


def test_batching_gives_the_unbatched_results(clients, index):
    off, on = clients
    assert off.app.state.service.batcher is None and off.get("/v1/info").json()["batching"] is None
    first = index.ids()[0]
    vector = np.random.default_rng(0).standard_normal(index.dim).tolist()
    bodies = [
        {"text": "a red circle", "target": "image", "k": 5},
        {"text": "a blue star", "k": 10},  # every modality
        {"text": "a red circle", "media": {"image": _png()}, "target": "sound"},  # composed
        {"values": {"caption": "a green square", "table": [0.2, 0.2, 0.5, 0.5]}, "target": "image"},
        {"text": "a circle", "vectors": {"": vector}, "like": first, "k": 8},  # values, vector and item
        {"text": "a circle", "vectors": {"caption": vector}},  # a given vector for the value's modality
        {"text": "a circle", "where": {"colour": "red"}, "k": 60, "min_score": -1},
    ]
    for body in bodies:
        _same_hits(off.post("/v1/search", json=body), on.post("/v1/search", json=body))
    embed = {"modality": "caption", "values": TEXTS[:3]}
    a, b = off.post("/v1/embed", json=embed).json(), on.post("/v1/embed", json=embed).json()
    np.testing.assert_allclose(a["vectors"], b["vectors"], atol=1e-5)


def test_concurrent_searches_share_batches_and_a_bad_value_gets_its_400(clients):
    off, on = clients
    before = on.get("/v1/info").json()["batching"]
    bodies = [{"text": t, "target": "image", "k": 5} for t in TEXTS]
    bodies.insert(5, {"values": {"caption": 5.0}, "target": "image"})  # embeds to a ValueError
    answers = _together(len(bodies), lambda i: on.post("/v1/search", json=bodies[i]))
    bad = answers.pop(5)
    assert bad.status_code == 400, bad.text
    assert bad.json() == off.post("/v1/search", json=bodies[5]).json()  # the same 400 as unbatched
    assert "query value for 'caption' cannot be used" in bad.json()["error"]["message"]
    for body, answer in zip(bodies[:5] + bodies[6:], answers, strict=True):
        _same_hits(off.post("/v1/search", json=body), answer)
    after = on.get("/v1/info").json()["batching"]
    assert after["wait_ms"] == 50 and after["max_batch"] == 64
    assert after["largest"] > 1 and after["values"] > before["values"]


def test_plain_searches_are_embedded_and_ranked_together_by_the_batcher(clients):
    """A plain search (one text, a target, nothing else) is answered by the batcher whole: one ranking
    call for the batch's vectors, the hits of the unbatched server. A filtered one takes the general path."""
    off, on = clients
    batcher = on.app.state.service.batcher
    real, ranked = batcher._search, []

    def spy(target, vectors, ks):
        ranked.append(len(vectors))
        return real(target, vectors, ks)

    batcher._search = spy
    try:
        bodies = [{"text": t, "target": "image", "k": 3 + i % 4} for i, t in enumerate(TEXTS)]
        answers = _together(len(bodies), lambda i: on.post("/v1/search", json=bodies[i]))
        for body, answer in zip(bodies, answers, strict=True):
            _same_hits(off.post("/v1/search", json=body), answer)
            assert len(answer.json()["hits"]) == body["k"]
        assert sum(ranked) == len(bodies) and max(ranked) > 1
        count = len(ranked)
        filtered = {"text": TEXTS[0], "target": "image", "k": 5, "min_score": -1.0}
        _same_hits(off.post("/v1/search", json=filtered), on.post("/v1/search", json=filtered))
        assert len(ranked) == count  # not plain: searched in a worker thread
    finally:
        batcher._search = real


def test_embed_route_reports_the_bad_value(clients):
    _, on = clients
    r = on.post("/v1/embed", json={"modality": "caption", "values": ["a circle", 5.0]})
    assert r.status_code == 400 and "cannot embed a value of 'caption'" in r.json()["error"]["message"]


# ---- settings and the command line ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("settings", "flag"),
    [({"batch_wait_ms": -1}, "--batch-wait-ms"), ({"batch_wait_ms": float("nan")}, "--batch-wait-ms"),
     ({"max_batch": 0}, "--max-batch"), ({"threads": -1}, "--threads")],
)  # fmt: skip
def test_settings_are_checked(settings, flag):
    with pytest.raises(ServeError, match=flag):
        ServeSettings(**settings).check()


def test_torch_threads_leave_a_core_for_the_event_loop():
    assert ServeSettings().torch_threads(cores=2) == 1
    assert ServeSettings().torch_threads(cores=16) == 15
    assert ServeSettings().torch_threads(processes=4, cores=16) == 3
    assert ServeSettings().torch_threads(processes=4, cores=2) == 1
    assert ServeSettings(threads=6).torch_threads(processes=4, cores=2) == 6


def test_cli_flags(index_dir, monkeypatch):
    from typer.testing import CliRunner

    from omnibind.cli.main import app

    served, threads = [], []
    monkeypatch.setattr("uvicorn.run", lambda app, **kw: served.append(app))
    monkeypatch.setattr("torch.set_num_threads", threads.append)  # the test process keeps its own
    for args, flag in ((["--batch-wait-ms", "-1"], "--batch-wait-ms"), (["--max-batch", "0"], "--max-batch")):
        result = CliRunner().invoke(app, ["serve", str(index_dir), *args])
        assert result.exit_code == 2 and flag in result.output, result.output
    assert not served  # refused before anything was opened or served
    result = CliRunner().invoke(app, ["serve", str(index_dir), "--batch-wait-ms", "0.5", "--max-batch", "8"])
    assert result.exit_code == 0, result.output
    service = served[0].state.service
    assert service.batcher is not None and service.batcher.max_batch == 8 and service.batcher.wait_s == 0.0005
    result = CliRunner().invoke(app, ["serve", str(index_dir), "--batch-wait-ms", "0", "--threads", "3"])
    assert result.exit_code == 0 and served[1].state.service.batcher is None
    assert threads == [ServeSettings().torch_threads(), 3] and "3 torch threads per process" in result.output
    result = CliRunner().invoke(app, ["serve", str(index_dir), "--threads", "-1"])
    assert result.exit_code == 2 and "--threads" in result.output
