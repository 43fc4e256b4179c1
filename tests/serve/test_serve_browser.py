"""End to end in a real headless Chromium: the explorer page against a live server on loopback.

Uses Debian's Chromium (/usr/bin/chromium, or $QKV_CHROMIUM) driven by Playwright's Python API;
skips only when Playwright or the browser binary is absent. Saves a screenshot under tmp_path.

Run as a script to take the README picture with a trained model:
    python tests/serve/test_serve_browser.py runs/reverse docs/img/explorer.png "hello world"
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from collections.abc import Iterator

import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install 'qkv[serve]'")
uvicorn = pytest.importorskip("uvicorn", reason="the serve extra is not installed: pip install 'qkv[serve]'")
playwright = pytest.importorskip("playwright.sync_api", reason="playwright (Python package) is not installed")

from qkv.serve import create_app  # noqa: E402

CHROMIUM = os.environ.get("QKV_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def live_server(run_dir: Path) -> Iterator[str]:
    """uvicorn serving `run_dir` on a free 127.0.0.1 port in a thread; yields the base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(run_dir), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        for _ in range(200):
            if server.started:
                break
            threading.Event().wait(0.05)
        assert server.started, "the server did not start within 10 s"
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@contextmanager
def chromium_page(width: int = 1280, height: int = 1400) -> Iterator[playwright.Page]:
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser.new_page(viewport={"width": width, "height": height})
        finally:
            browser.close()


def explore(page: playwright.Page, url: str, sentence: str) -> None:
    """Open the page, type `sentence`, submit, and wait for the output and the heatmap."""
    page.goto(url)
    page.wait_for_function("document.getElementById('model-summary').textContent.includes('parameters')")
    page.fill("#text", sentence)
    page.click("#go")
    page.wait_for_selector("#result:not([hidden])", timeout=30_000)
    page.wait_for_function("document.getElementById('heatmap').width > 0")


def test_explorer_page_in_chromium(tmp_path: Path) -> None:
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install -y chromium (or set QKV_CHROMIUM)")
    from tests.serve_runs import tiny_run

    run = tiny_run(tmp_path / "run")
    errors: list[str] = []
    with live_server(run) as url, chromium_page() as page:
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        explore(page, url, "hello world")
        assert page.locator("#tokens .chip").count() >= len("hello world")
        assert "Cross-attention" in page.inner_text("#heat-title")
        page.click("#kinds button:has-text('Encoder self')")
        page.click("#heads button:has-text('2')")
        assert "Encoder self-attention" in page.inner_text("#heat-title")
        assert "head 2" in page.inner_text("#heat-title")
        assert page.locator("#thumbs .thumb").count() == 3           # avg + 2 heads
        assert page.locator("#steps .step").count() >= 1
        assert page.locator("#rope-card").is_hidden() and page.locator("#rms-card").is_hidden()   # not in this model
        page.fill("#text", "x" * 100)                                 # longer than the model's max_len:
        page.click("#go")                                             # cut, with a warning (one text rule)
        page.wait_for_selector("#warning:not([hidden])")
        assert "so the rest was cut" in page.inner_text("#warning")
        assert page.locator("#error").is_hidden()
        page.screenshot(path=str(tmp_path / "explorer.png"), full_page=True)
    assert errors == []
    assert (tmp_path / "explorer.png").stat().st_size > 10_000


def test_explorer_shows_the_rope_turn_and_the_rmsnorm_step(tmp_path: Path) -> None:
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install -y chromium (or set QKV_CHROMIUM)")
    from tests.serve_runs import tiny_run

    run = tiny_run(tmp_path / "run", "decoder-only", positional="rope", norm="rmsnorm", activation="swiglu",
                   n_kv_heads=1, norm_first=True)
    errors: list[str] = []
    with live_server(run) as url, chromium_page() as page:
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        explore(page, url, "hello world")
        assert page.locator("#rope-card").is_visible() and page.locator("#rms-card").is_visible()
        assert "10000" in page.inner_text("#rope-theta")
        page.click("#rope-layers button:has-text('2')")
        page.click("#rope-heads button:has-text('2')")
        page.click("#rope-tokens .chip:nth-child(5)")                  # position 4, the "o" of "hello"
        assert "layer 2 · head 2 · “o” at position 4" in page.inner_text("#rope-title")
        assert page.locator("#rope-q").evaluate("c => c.width") > 0 and page.locator("#rope-k").evaluate("c => c.width") > 0
        check = page.inner_text("#rope-check")                          # the turn read from the model == 4·θᵢ
        assert "4·θᵢ" in check and float(check.split(": ")[1].split("°")[0]) < 0.1, check
        page.click("#rms-layers button:has-text('final')")
        page.click("#rms-tokens .chip:nth-child(3)")
        assert "the final norm" in page.inner_text("#rms-title") and "(position 2)" in page.inner_text("#rms-title")
        numbers = page.inner_text("#rms-check")                         # the page's √mean(x²) == the model's RMS
        ours, model = (float(numbers.split(t)[1].split(" ")[0].rstrip(",")) for t in ("√mean(x²) = ", "divided by "))
        assert ours == pytest.approx(model, abs=2e-3), numbers
        page.screenshot(path=str(tmp_path / "modern.png"), full_page=True)
    assert errors == []


def screenshot(run_dir: str, out: str, sentence: str) -> None:
    """Take the README picture: the explorer page for `sentence` with the model in `run_dir`."""
    with live_server(Path(run_dir)) as url, chromium_page(1200, 1500) as page:
        explore(page, url, sentence)
        page.screenshot(path=out, full_page=True)


if __name__ == "__main__":
    screenshot(*sys.argv[1:4])
