"""End to end in a real headless Chromium: the explorer page against a live server on loopback.

Uses Debian's Chromium (/usr/bin/chromium, or $QKV_CHROMIUM) driven by Playwright's Python API;
skips only when Playwright or the browser binary is absent. Saves a screenshot under tmp_path.
The page is checked in English and in Korean (its toggle, and ?lang=ko): no English string of the
pages' table (qkv.explain.i18n) may be left in the Korean page's visible text; and it counts layers
and heads as `qkv explain --layer/--head` does, showing the same numbers for the same layer and head.

Run as a script to take the README picture with a trained model:
    python tests/serve/test_serve_browser.py runs/reverse docs/img/explorer.png "hello world"
"""

from __future__ import annotations

import os
import re
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
from tests.words import english_left  # noqa: E402

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
    page.wait_for_function("document.documentElement.dataset.model === 'ready'")
    page.fill("#text", sentence)
    page.click("#go")
    page.wait_for_selector("#result:not([hidden])", timeout=30_000)
    page.wait_for_function("document.getElementById('heatmap').width > 0")


def cells(page: playwright.Page, tensor: str) -> list[list[str]]:
    """The printed numbers of the explorer's step table `tensor` (data-tensor), without labels."""
    return page.eval_on_selector(f"#walk table[data-tensor='{tensor}']",
                                 "t => [...t.rows].slice(1).map(r => [...r.cells].slice(1).map(c => c.textContent))")


def page_cells(html_page: str, kind: str, tensor: str) -> list[list[str]]:
    """The same from the `qkv explain` page: attention `kind`'s step table `tensor`."""
    import html

    section = re.search(rf"<details data-attention='{kind}'[^>]*>(.*?)</details>", html_page, re.S).group(1)
    body = re.search(rf"<table class='m' data-tensor='{tensor}'>(.*?)</table>", section, re.S).group(1)
    rows = [re.findall(r"<td[^>]*>(.*?)</td>", row) for row in re.findall(r"<tr>(.*?)</tr>", body, re.S)]
    return [[html.unescape(c) for c in row] for row in rows if row]


def test_explorer_page_in_chromium(tmp_path: Path, monkeypatch) -> None:
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install -y chromium (or set QKV_CHROMIUM)")
    from qkv.cli import main
    from qkv.explain import report
    from tests.serve_runs import tiny_run

    run = tiny_run(tmp_path / "run")
    monkeypatch.setattr(report, "image", lambda fig, alt: "")          # the explain page's numbers only
    assert main(["explain", "--model", str(run), "hello world", "--layer", "1", "--head", "1",
                 "--out", str(tmp_path / "explain.html")]) == 0
    explained = (tmp_path / "explain.html").read_text()
    errors: list[str] = []
    explains: list[str] = []
    with live_server(run) as url, chromium_page() as page:
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("request", lambda r: explains.append(r.url) if r.url.endswith("/v1/explain") else None)
        explore(page, url, "hello world")
        assert page.locator("#tokens .chip").count() >= len("hello world")
        assert "Cross-attention" in page.inner_text("#heat-title")
        assert page.locator("#engine").get_attribute("data-engine") == "qkv"             # which engine wrote it
        assert "qkv's own greedy search" in page.inner_text("#engine")
        page.click("#kinds button:has-text('Encoder self')")
        page.click("#layers button:has-text('1')")
        page.click("#heads button:has-text('1')")
        # one counting convention: the explorer's layer 1, head 1 is `qkv explain --layer 1 --head 1`
        assert "(layer 1, head 1)" in explained
        assert "Encoder self-attention · layer 1 · head 1" in page.inner_text("#heat-title")
        assert "Encoder self-attention · layer 1 · head 1" in page.inner_text("#walk-title")
        assert page.locator("#walk .walk-step").count() == 8                               # steps 0..7
        assert "W_Q[:, 16..31]" in page.inner_text("#walk")                               # head 1 of 2, d_model 32
        for tensor in ("w_q", "q", "scores", "weights", "head_out"):
            assert cells(page, tensor) == page_cells(explained, "enc", tensor), tensor
        assert page.locator("#thumbs .thumb").count() == 3           # avg + 2 heads
        assert page.locator("#steps .step").count() >= 1
        assert page.locator("#rope-card").is_hidden() and page.locator("#rms-card").is_hidden()   # not in this model
        english = page.inner_text("body")
        asked = len(explains)
        page.click("#lang button:has-text('한국어')")                   # the same results, said in Korean
        korean = page.inner_text("body")
        assert len(explains) == asked and page.evaluate("document.documentElement.lang") == "ko"
        assert english_left(korean) == [] and english_left(english, "en") == []
        assert "인코더 셀프 어텐션 (self-attention) · 층 1 · 헤드 1" in page.inner_text("#walk-title")
        assert cells(page, "scores") == page_cells(explained, "enc", "scores")
        page.reload()                                                 # the choice is remembered
        page.wait_for_function("document.documentElement.dataset.model === 'ready'")
        assert page.inner_text("#go") == "번역" and page.title() == "qkv 탐색기"
        page.click("#lang button:has-text('English')")
        page.fill("#text", "x" * 100)                                 # longer than the model's max_len:
        page.click("#go")                                             # cut, with a warning (one text rule)
        page.wait_for_selector("#warning:not([hidden])")
        assert "so the rest was cut" in page.inner_text("#warning")
        assert page.locator("#error").is_hidden()
        page.screenshot(path=str(tmp_path / "explorer.png"), full_page=True)
        fresh = page.context.browser.new_page()                      # a new profile: ?lang=ko alone decides
        fresh.goto(f"{url}/?lang=ko")
        fresh.wait_for_function("document.documentElement.dataset.model === 'ready'")
        assert english_left(fresh.inner_text("body")) == [] and fresh.inner_text("#go") == "번역"
        assert "번역 모델 · 2+2층 (layer) · 헤드 (head) 2개" in fresh.inner_text("#model-summary")
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
        page.click("#rope-layers button:has-text('1')")
        page.click("#rope-heads button:has-text('1')")
        page.click("#rope-tokens .chip:nth-child(5)")                  # position 4, the "o" of "hello"
        assert "layer 1 · head 1 · “o” at position 4" in page.inner_text("#rope-title")
        assert page.locator("#rope-q").evaluate("c => c.width") > 0 and page.locator("#rope-k").evaluate("c => c.width") > 0
        check = page.inner_text("#rope-check")                          # the turn read from the model == 4·θᵢ
        assert "4·θᵢ" in check and float(check.split(": ")[1].split("°")[0]) < 0.1, check
        page.click("#rms-layers button:has-text('final')")
        page.click("#rms-tokens .chip:nth-child(3)")
        assert "the final norm" in page.inner_text("#rms-title") and "(position 2)" in page.inner_text("#rms-title")
        numbers = page.inner_text("#rms-check")                         # the page's √mean(x²) == the model's RMS
        ours, model = (float(numbers.split(t)[1].split(" ")[0].rstrip(",")) for t in ("√mean(x²) = ", "divided by "))
        assert ours == pytest.approx(model, abs=2e-3), numbers
        walk = page.inner_text("#walk")                                # the explain page's steps, RoPE's too
        assert "0. Normalize the residual stream (pre-LN)" in walk and "1b. Rotate queries and keys" in walk
        assert "The final norm" in page.inner_text("#final-norm")
        page.click("#lang button:has-text('한국어')")                   # every card in Korean, RoPE's and RMSNorm's
        assert english_left(page.inner_text("body")) == []
        assert "1b. 쿼리와 키를 위치만큼 회전 (RoPE)" in page.inner_text("#walk")
        assert "10000" in page.inner_text("#rope-theta") and "마지막 정규화" in page.inner_text("#rms-title")
        page.screenshot(path=str(tmp_path / "modern.png"), full_page=True)
    assert errors == []


def screenshot(run_dir: str, out: str, sentence: str, lang: str = "en") -> None:
    """Take the README picture: the explorer page for `sentence` with the model in `run_dir`, in `lang`."""
    with live_server(Path(run_dir)) as url, chromium_page(1200, 1500) as page:
        explore(page, f"{url}/?lang={lang}", sentence)
        page.screenshot(path=out, full_page=True)


if __name__ == "__main__":
    screenshot(*sys.argv[1:5])
