"""``omnibind serve --processes 2``: two server processes on one port over one local index."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from omnibind.config import config_from_dict
from omnibind.index import Index
from omnibind.model import OmniModel

D = 16


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_two_processes_serve_one_index_and_see_each_others_writes(tmp_path: Path) -> None:
    model = OmniModel(
        config_from_dict({"modalities": {"vec": {"kind": "embedding", "dim": D}}, "model": {"dim": D}})
    )
    index = Index.create(tmp_path / "ix", model.save(tmp_path / "model"))
    x = np.random.default_rng(0).standard_normal((100, D)).astype(np.float32)
    index.add_embeddings([f"v{i}" for i in range(100)], {"vec": x / np.linalg.norm(x, axis=1, keepdims=True)})
    index.close()
    (tmp_path / "keys").write_text("write test-write-key-0123456789\n")
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "omnibind", "serve", str(tmp_path / "ix"), "--port", str(port)]
    cmd += ["--processes", "2", "--api-key-file", str(tmp_path / "keys")]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    auth = {"Authorization": "Bearer test-write-key-0123456789"}
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.3)
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        assert len(children) >= 2  # uvicorn's supervisor and its two workers
        # writes land on either process (a new connection each); each is seen by every later request
        for i in range(6):
            vec = np.random.default_rng(100 + i).standard_normal(D).tolist()
            r = httpx.post(
                f"{base}/v1/items", json={"items": [{"id": f"new{i}", "values": {"vec": vec}}]}, headers=auth
            )
            assert r.status_code == 201, r.text
            for _ in range(4):
                found = httpx.post(f"{base}/v1/search", json={"like": f"new{i}", "k": 1}, headers=auth)
                assert found.status_code == 200, found.text
                info = httpx.get(f"{base}/v1/info", headers=auth).json()
                assert info["items"] == 101 + i, info
        r = httpx.delete(f"{base}/v1/items/new0", headers=auth)
        assert r.status_code == 200
        for _ in range(6):
            assert httpx.get(f"{base}/v1/items/new0", headers=auth).status_code == 404
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    assert len(Index.open(tmp_path / "ix")) == 105


def test_processes_refused_where_they_cannot_share(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from omnibind.cli.main import app

    out = CliRunner().invoke(
        app, ["serve", "qdrant+path://" + str(tmp_path / "q") + "/c", "--processes", "2"]
    )
    assert out.exit_code != 0 and "cannot share a Qdrant local-mode folder" in str(out.output) + str(
        out.exception
    )
    out = CliRunner().invoke(app, ["serve", str(tmp_path), "--processes", "0"])
    assert out.exit_code != 0 and "--processes must be at least 1" in str(out.output) + str(out.exception)


if __name__ == "__main__":  # pragma: no cover
    pytest.main([__file__, "-q"])
