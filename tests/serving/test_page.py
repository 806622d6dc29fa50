"""The search page end to end in headless Chromium (Debian's ``chromium`` driven by Playwright's Python API):
type a query, see an image grid, drop two files for a composed query, "more like this" by keyboard."""

from __future__ import annotations

import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from omnibind.index import Index
from omnibind.serving import ServeSettings, create_app

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-gpu", "--disable-component-update",
        "--no-first-run"]  # fmt: skip


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(app, port: int):
    """A uvicorn server in a daemon thread on 127.0.0.1; returns it once it accepts connections."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.05)
    return server, thread


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not CHROMIUM.exists() or shutil.which("chromium") is None:
        pytest.skip("no browser: /usr/bin/chromium is absent (apt-get install chromium; .ci/run installs it)")
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')"
    )
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture(scope="module")
def base_url(index_dir) -> Iterator[str]:
    port = free_port()
    server, thread = start_server(create_app(Index.open(index_dir), ServeSettings()), port)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def _files(tmp_path: Path) -> list[Path]:
    import soundfile as sf
    from PIL import Image

    png, wav = tmp_path / "query.png", tmp_path / "query.wav"
    Image.new("RGB", (16, 16), (220, 20, 20)).save(png)
    t = np.arange(2000) / 8000
    sf.write(wav, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 8000)
    return [png, wav]


def test_search_page(browser, base_url, tmp_path):
    page = browser.new_page(viewport={"width": 1100, "height": 800})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(base_url + "/")
    page.wait_for_function("document.getElementById('info').textContent.includes('60 items')", timeout=10_000)
    assert page.locator("#target option").count() == 5  # all + 4 modalities

    # keyboard only: "/" focuses the box, Enter searches
    page.keyboard.press("/")
    page.keyboard.type("a red circle")
    page.keyboard.press("Enter")
    cards = page.locator("#results .card")
    cards.first.wait_for(timeout=10_000)
    page.wait_for_function("document.querySelectorAll('#results .card').length === 12", timeout=10_000)
    first_image = cards.first.locator("img")
    first_image.wait_for()
    page.wait_for_function("document.querySelector('#results .card img').naturalWidth > 0", timeout=10_000)
    assert "score" in (cards.first.get_attribute("title") or "")
    assert "results" in page.locator("#status").inner_text()

    # two dropped files make one composed query (multipart upload)
    page.locator("#files").set_input_files([str(p) for p in _files(tmp_path)])
    assert page.locator("#chips li").count() == 2
    page.locator("#go").click()
    page.wait_for_function("!document.getElementById('status').textContent.includes('searching')")
    assert "results (" in page.locator("#status").inner_text(), page.locator("#status").inner_text()
    assert cards.count() == 12

    # "more like this" from the keyboard
    first_id = cards.first.locator(".id").inner_text()
    cards.first.locator("button.more").focus()
    page.keyboard.press("Enter")
    page.wait_for_function(f"document.getElementById('status').textContent.includes('like {first_id}')")
    assert first_id not in [c.inner_text() for c in page.locator("#results .card .id").all()]

    # a server error is shown, not swallowed (the browser itself stops k > max, so lift that first)
    page.evaluate("document.getElementById('k').removeAttribute('max')")
    page.fill("#k", "5000")
    page.locator("#go").click()
    page.wait_for_function("document.getElementById('status').classList.contains('error')")
    assert "k must be" in page.locator("#status").inner_text()
    assert not errors, errors
    page.close()


def test_audio_is_playable(browser, base_url):
    page = browser.new_page()
    page.goto(base_url + "/")
    page.wait_for_function("document.getElementById('info').textContent.includes('60 items')")
    page.select_option("#target", "sound")
    page.fill("#q", "a blue square")
    page.keyboard.press("Enter")
    page.locator("#results .card audio").first.wait_for(timeout=10_000)
    ok = page.evaluate(
        "() => new Promise(r => { const a = document.querySelector('#results audio');"
        " if (a.readyState >= 1) r(a.duration > 0);"
        " a.addEventListener('loadedmetadata', () => r(a.duration > 0)); setTimeout(() => r(false), 5000); })"
    )
    assert ok
    page.close()
