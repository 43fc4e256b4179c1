"""The HTTP API through FastAPI's TestClient (no socket): valid and invalid requests."""

from __future__ import annotations

import json
import re
import threading
import time

import pytest
import torch

pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install 'qkv[serve]'")
pytest.importorskip("httpx", reason="TestClient needs httpx: pip install 'qkv[serve]'")

from fastapi.testclient import TestClient  # noqa: E402
from tests.serve_runs import tiny_run  # noqa: E402

from qkv.cli import main  # noqa: E402
from qkv.serve import create_app  # noqa: E402
from qkv.serve.schemas import MAX_BATCH, MAX_BODY_BYTES, MAX_TEXT_CHARS  # noqa: E402


@pytest.fixture(scope="module")
def mt(tmp_path_factory) -> TestClient:
    with TestClient(create_app(tiny_run(tmp_path_factory.mktemp("mt")), allowed_hosts=["testserver"])) as client:
        yield client


@pytest.fixture(scope="module")
def lm(tmp_path_factory) -> TestClient:
    with TestClient(create_app(tiny_run(tmp_path_factory.mktemp("lm"), "decoder-only"), allowed_hosts=["testserver"])) as client:
        yield client


def test_health_and_model_info(mt: TestClient, lm: TestClient) -> None:
    assert mt.get("/health").json() == {"status": "ok", "kind": "translation", "queued": 0}
    info = mt.get("/v1/model").json()
    assert info["kind"] == "translation" and info["src_vocab_size"] == info["tgt_vocab_size"] == 31
    assert info["parameters"] == sum(p.numel() for p in mt.app.state.engine.model.parameters())
    assert info["config"]["n_heads"] == 2 and info["limits"]["max_batch"] == MAX_BATCH
    lm_info = lm.get("/v1/model").json()
    assert lm_info["kind"] == "language-model" and lm_info["src_vocab_size"] is None


def test_translate_greedy_batch_keeps_order(mt: TestClient) -> None:
    texts = ["hello", "abc", "a longer sentence"]
    r = mt.post("/v1/translate", json={"texts": texts, "max_new_tokens": 8})
    assert r.status_code == 200, r.text
    out = r.json()["translations"]
    assert [t["source"] for t in out] == texts
    alone = [mt.post("/v1/translate", json={"texts": [t], "max_new_tokens": 8}).json()["translations"][0]["text"]
             for t in texts]
    assert [t["text"] for t in out] == alone


def test_translate_beam_returns_n_best_sorted(mt: TestClient) -> None:
    r = mt.post("/v1/translate", json={"texts": ["hello"], "beam_size": 4, "n_best": 3, "max_new_tokens": 5})
    hyps = r.json()["translations"][0]["hypotheses"]
    assert len(hyps) == 3 and [h["score"] for h in hyps] == sorted((h["score"] for h in hyps), reverse=True)
    assert all(len(h["tokens"]) <= 5 for h in hyps)


def test_sampling_with_a_seed_repeats(mt: TestClient) -> None:
    body = {"texts": ["hello"], "sample": True, "temperature": 1.5, "top_p": 0.9, "seed": 7}
    first, second = (mt.post("/v1/translate", json=body).json()["translations"] for _ in range(2))
    assert first == second


def test_generate_on_a_language_model(lm: TestClient) -> None:
    body = {"prompt": "ab", "max_new_tokens": 8, "seed": 3}
    r = lm.post("/v1/generate", json=body)
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["prompt"] == "ab" and len(data["tokens"]) <= 8
    assert lm.post("/v1/generate", json=body).json()["text"] == data["text"]


def test_explain_translation_has_every_map(mt: TestClient) -> None:
    r = mt.post("/v1/explain", json={"text": "hello", "top_k": 3, "max_new_tokens": 6})
    assert r.status_code == 200, r.text
    d = r.json()
    assert d["kind"] == "translation" and d["source_tokens"] == list("hello")
    maps = {m["kind"]: m for m in d["attention"]}
    assert list(maps) == ["encoder", "decoder", "cross"]
    n_out = len(d["output_tokens"]) + 1                      # the decoder reads <bos> + output
    for kind, (n_q, n_k) in {"encoder": (5, 5), "decoder": (n_out, n_out), "cross": (n_out, 5)}.items():
        m = maps[kind]
        assert (len(m["queries"]), len(m["keys"])) == (n_q, n_k)
        assert len(m["weights"]) == 2 and len(m["weights"][0]) == 2          # layers, heads
        for row in m["weights"][1][1]:
            assert len(row) == n_k and sum(row) == pytest.approx(1.0, abs=1e-3)
    assert maps["decoder"]["weights"][0][0][0][1:] == [0.0] * (n_out - 1)   # causal: <bos> sees itself only
    assert len(d["steps"]) == n_out and len(d["steps"][0]["candidates"]) == 3
    assert d["steps"][0]["context"] == "<bos>"


def test_explain_language_model_shows_masked_self_attention(lm: TestClient) -> None:
    d = lm.post("/v1/explain", json={"text": "abc", "max_new_tokens": 4}).json()
    assert [m["kind"] for m in d["attention"]] == ["decoder"]
    assert d["output_tokens"][:3] == ["a", "b", "c"] and d["source_tokens"] == []
    assert d["steps"][0]["context"] == "c"                  # the first step chose the first new token
    assert d["rope"] is None and d["rmsnorm"] is None        # sinusoidal positions, LayerNorm


@pytest.mark.parametrize("arch", ["decoder-only", "encoder-decoder"])
def test_explain_shows_the_rope_turn_and_every_rmsnorm(tmp_path, arch: str) -> None:
    modern = {"positional": "rope", "norm": "rmsnorm", "activation": "swiglu", "n_kv_heads": 1, "norm_first": True,
              "qk_norm": True}
    with TestClient(create_app(tiny_run(tmp_path / "run", arch, **modern), allowed_hosts=["testserver"])) as client:
        d = client.post("/v1/explain", json={"text": "hello", "max_new_tokens": 5}).json()
        model = client.app.state.engine.model
    stacks = ["encoder", "decoder"] if arch == "encoder-decoder" else ["decoder"]
    rope, norms = d["rope"], d["rmsnorm"]
    assert rope["theta"] == 10000.0 and rope["d_head"] == 16 and [s["kind"] for s in rope["stacks"]] == stacks
    decoder = rope["stacks"][-1]
    assert decoder["tokens"] == d["attention"][-1 if arch == "decoder-only" else 1]["queries"]
    turn = model.decoder.layers[1].self_attn.rope
    layer = decoder["layers"][1]
    for before, after in (("q_before", "q"), ("k_before", "k")):                 # [head][position][dim]
        b, a = torch.tensor(layer[before]), torch.tensor(layer[after])
        assert b.shape == (2, len(decoder["tokens"]), 16)
        torch.testing.assert_close(a, turn(b[None])[0], atol=2e-4, rtol=0)      # after = the model's turn of before
        assert not torch.allclose(a[:, 1:], b[:, 1:], atol=1e-3)                # positions 1.. really turned
    k = torch.tensor(layer["k"])
    assert torch.equal(k[0], k[1])                                              # one key/value head (MQA)
    for m in d["attention"]:                       # the explorer's steps: QK-norm's step 1a, then RoPE's 1b
        walk = m["walk"][1][1]
        titles = [s["title"]["key"] for s in walk]
        assert titles[1:4] == ["step.proj.title", "step.qk_norm.title"] + (
            ["step.rope.title"] if m["kind"] != "cross" else ["step.scores.title"])
        qk = walk[2]
        assert qk["norm"] == {"kind": "rmsnorm", "eps": 1e-5, "per_head": True}
        assert [t["name"] for t in qk["tables"]] == ["q_norm_gain", "k_norm_gain"] + (
            ["q_before_rope", "k_before_rope"] if m["kind"] != "cross" else ["q", "k"])
    assert [s["kind"] for s in norms["stacks"]] == stacks and norms["final"]["block"] == "final"
    blocks = [n["block"] for n in norms["stacks"][-1]["layers"][0]]
    assert blocks == (["attention", "cross-attention", "feed-forward"] if arch == "encoder-decoder"
                      else ["attention", "feed-forward"])
    for layer_norms in norms["stacks"][0]["layers"]:
        for n in layer_norms:
            x, rms = torch.tensor(n["input"]), torch.tensor(n["rms"])
            torch.testing.assert_close(rms, x.pow(2).mean(-1).add(1e-5).sqrt(), atol=2e-4, rtol=1e-4)
            torch.testing.assert_close(torch.tensor(n["output"]), x / rms[:, None] * torch.tensor(n["gain"]),
                                       atol=5e-4, rtol=1e-3)


@pytest.mark.parametrize(
    "body, where",
    [
        ({"texts": []}, "body.texts"),
        ({"texts": [""]}, "body.texts.0"),
        ({"texts": "hello"}, "body.texts"),
        ({"texts": ["hi"], "beam_size": "3"}, "body.beam_size"),
        ({"texts": ["hi"], "beam_size": 0}, "body.beam_size"),
        ({"texts": ["hi"], "temperature": 0}, "body.temperature"),
        ({"texts": ["hi"], "beam": 4}, "body.beam"),
        ({"texts": ["x" * (MAX_TEXT_CHARS + 1)]}, "body.texts.0"),
        ({"texts": ["hi"] * (MAX_BATCH + 1)}, "body.texts"),
        ({"texts": ["hi"], "max_new_tokens": 100000}, "body.max_new_tokens"),
        ({"texts": ["hi"], "beam_size": 2, "n_best": 3}, "n_best (3) must be <= beam_size (2)"),
        ({"texts": ["hi"], "beam_size": 2, "sample": True}, "exclude each other"),
        ([1, 2], "body"),
    ],
)
def test_invalid_requests_get_422_with_one_line(mt: TestClient, body, where: str) -> None:
    r = mt.post("/v1/translate", json=body)
    assert r.status_code == 422
    message = r.json()["message"]
    assert where in message and "\n" not in message


def test_malformed_json_is_422(mt: TestClient) -> None:
    r = mt.post("/v1/translate", content=b'{"texts": [', headers={"content-type": "application/json"})
    assert r.status_code == 422
    assert "not valid JSON" in r.json()["message"]


def test_text_longer_than_the_model_is_cut_with_a_warning(mt: TestClient) -> None:
    # the one over-long rule of qkv.text (OVER_LONG_RULE), as in `qkv translate` and `qkv explain`
    r = mt.post("/v1/translate", json={"texts": ["ok", "a" * 100]})
    assert r.status_code == 200
    first, second = r.json()["translations"]
    assert first["warnings"] == []
    assert second["warnings"] == ["text 1 has 100 tokens; the model reads at most 64, so the rest was cut"]
    r = mt.post("/v1/explain", json={"text": "a" * 100})
    assert r.status_code == 200
    assert r.json()["warnings"] == ["the text has 100 tokens; the model reads at most 64, so the rest was cut"]
    assert len(r.json()["source_tokens"]) == 64


def test_translate_and_explain_share_one_source_limit(mt: TestClient) -> None:
    """max_len 64: both endpoints read 64 source tokens and cut a longer text to them, saying so."""
    limit = mt.get("/v1/model").json()["limits"]["max_source_tokens"]
    assert limit == 64
    for n in (limit, limit + 1):
        a = mt.post("/v1/translate", json={"texts": ["a" * n], "max_new_tokens": 2})
        b = mt.post("/v1/explain", json={"text": "a" * n, "max_new_tokens": 2})
        assert (a.status_code, b.status_code) == (200, 200), n
        warned = (a.json()["translations"][0]["warnings"], b.json()["warnings"])
        assert warned == (([], []) if n == limit else ([f"text 0 has {n} tokens; the model reads at most 64, so the rest was cut"],
                                                      [f"the text has {n} tokens; the model reads at most 64, so the rest was cut"]))


@pytest.mark.parametrize("kind", ["text/plain", None, "application/x-www-form-urlencoded"])
def test_a_body_not_sent_as_json_is_415_saying_so(mt: TestClient, kind) -> None:
    headers = {"content-type": kind} if kind else {}
    r = mt.post("/v1/translate", content=b'{"texts": ["ab"]}', headers=headers)
    assert r.status_code == 415
    message = r.json()["message"]
    assert "Content-Type: application/json" in message and "\n" not in message
    ok = mt.post("/v1/translate", content=b'{"texts": ["ab"]}', headers={"content-type": "application/json; charset=utf-8"})
    assert ok.status_code == 200


def test_oversize_body_is_413(mt: TestClient) -> None:
    big = json.dumps({"texts": ["a" * 1000] * 1100}).encode()
    assert len(big) > MAX_BODY_BYTES
    r = mt.post("/v1/translate", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "larger than" in r.json()["message"]


def test_wrong_endpoint_for_the_model_kind(mt: TestClient, lm: TestClient) -> None:
    r = lm.post("/v1/translate", json={"texts": ["hi"]})
    assert r.status_code == 400 and "language model; use POST /v1/generate" in r.json()["message"]
    r = mt.post("/v1/generate", json={"prompt": "hi"})
    assert r.status_code == 400 and "translation model; use POST /v1/translate" in r.json()["message"]


def test_unknown_route_and_method(mt: TestClient) -> None:
    assert mt.get("/v1/nothing").status_code == 404
    assert mt.get("/v1/translate").status_code == 405


def test_page_docs_and_static_files(mt: TestClient) -> None:
    page = mt.get("/")
    assert page.status_code == 200 and "qkv explorer" in page.text
    for path in ("/static/explorer.js", "/static/style.css"):
        assert mt.get(path).status_code == 200
    assert mt.get("/docs").status_code == 200
    paths = mt.get("/openapi.json").json()["paths"]
    assert {"/health", "/v1/model", "/v1/translate", "/v1/generate", "/v1/explain"} <= set(paths)


def test_health_answers_while_the_model_is_busy(mt: TestClient) -> None:
    release = threading.Event()
    worker = mt.app.state.worker
    busy = worker.call(lambda: release.wait(10))
    try:
        start = time.perf_counter()
        r = mt.get("/health")
        assert r.status_code == 200 and r.json()["queued"] >= 1
        assert time.perf_counter() - start < 2
    finally:
        release.set()
        busy.result(timeout=10)


def test_a_full_queue_answers_503(mt: TestClient, monkeypatch) -> None:
    from qkv.serve import worker as worker_module

    release = threading.Event()
    busy = mt.app.state.worker.call(lambda: release.wait(10))
    monkeypatch.setattr(worker_module, "MAX_QUEUED", 1)
    try:
        r = mt.post("/v1/translate", json={"texts": ["hi"]})
    finally:
        release.set()
        busy.result(timeout=10)
    assert r.status_code == 503 and "retry shortly" in r.json()["message"]


def test_waiting_translations_are_batched_together(mt: TestClient) -> None:
    engine, worker = mt.app.state.engine, mt.app.state.worker
    calls: list[int] = []
    translate = engine.translate
    engine.translate = lambda req: calls.append(len(req.texts)) or translate(req)
    release = threading.Event()
    try:
        blocker = worker.call(lambda: release.wait(10))
        from qkv.serve.schemas import TranslateRequest

        futures = [worker.translate(TranslateRequest(texts=[t])) for t in ("ab", "cd", "ef")]
        release.set()
        blocker.result(timeout=10)
        results = [f.result(timeout=30)[0]["source"] for f in futures]
    finally:
        engine.translate = translate
    assert results == ["ab", "cd", "ef"] and calls == [3]


def test_cli_serve_missing_run_is_one_line(capsys) -> None:
    assert main(["serve", "--model", "/nonexistent/run"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: run directory not found") and "\n" not in err


def test_cli_serve_port_in_use_is_one_line(tmp_path, capsys) -> None:
    import socket

    run = tiny_run(tmp_path / "run")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", "--model", str(run), "--port", str(port)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: cannot listen on 127.0.0.1:{port}") and "\n" not in err


def post_then_leave(app, payload: dict, after: float) -> None:
    """POST `payload` to /v1/translate through the ASGI app, then disconnect after `after` seconds."""
    import asyncio

    body = json.dumps(payload).encode()
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive():
        if messages:
            return messages.pop(0)
        await asyncio.sleep(after)
        return {"type": "http.disconnect"}

    async def send(message):
        pass

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
             "scheme": "http", "path": "/v1/translate", "raw_path": b"/v1/translate", "query_string": b"",
             "root_path": "", "headers": [(b"host", b"testserver"), (b"content-type", b"application/json"),
                                          (b"content-length", str(len(body)).encode())],
             "client": ("127.0.0.1", 1234), "server": ("127.0.0.1", 80)}
    asyncio.run(app(scope, receive, send))


def test_a_request_whose_client_left_is_never_decoded(mt: TestClient, monkeypatch) -> None:
    """The client disconnects while its job waits behind a slow one: the job is cancelled, skipped."""
    app = mt.app
    worker, engine = app.state.worker, app.state.engine
    calls = []
    real = engine.translate
    monkeypatch.setattr(engine, "translate", lambda req: calls.append(req) or real(req))
    busy = worker.call(lambda: time.sleep(0.6))            # the worker is busy for a while
    skipped = worker.skipped
    post_then_leave(app, {"texts": ["abc"]}, after=0.1)      # the client goes away while it waits
    busy.result(timeout=10)
    deadline = time.time() + 5
    while worker.skipped == skipped and time.time() < deadline:
        time.sleep(0.01)
    assert worker.skipped == skipped + 1 and calls == []
    assert mt.get("/health").json()["queued"] == 0
    assert mt.post("/v1/translate", json={"texts": ["abc"]}).status_code == 200   # the worker goes on


def test_a_request_whose_client_left_stops_decoding(mt: TestClient, monkeypatch) -> None:
    """The client disconnects while its job is decoding: decoding stops at its next step
    (qkv.search.check_stop, which every decoding step calls), instead of running to the end."""
    from qkv.search import DecodingStopped, check_stop

    app = mt.app
    engine = app.state.engine
    outcome = {}

    def long_decoding(req):                                # a decode of many steps, each checking
        start = time.time()
        try:
            while time.time() - start < 20:
                check_stop()
                time.sleep(0.01)
            outcome["ran"] = "to the end"
        except DecodingStopped:
            outcome["ran"] = f"stopped after {time.time() - start:.2f} s"
            raise

    monkeypatch.setattr(engine, "translate", long_decoding)
    post_then_leave(app, {"texts": ["abc"]}, after=0.3)      # the job is running by then; the client leaves
    deadline = time.time() + 10
    while "ran" not in outcome and time.time() < deadline:
        time.sleep(0.01)
    assert outcome.get("ran", "").startswith("stopped after")
    monkeypatch.undo()
    assert mt.post("/v1/translate", json={"texts": ["abc"]}).status_code == 200   # the worker goes on


def test_bind_errors_blame_the_right_option() -> None:
    import socket

    from qkv.errors import QkvError
    from qkv.serve.app import _check_bindable

    with pytest.raises(QkvError, match="--host") as not_here:
        _check_bindable("192.0.2.1", 8000)                 # TEST-NET-1: no interface has it
    assert "--port" not in str(not_here.value)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(QkvError, match="pick another --port"):
            _check_bindable("127.0.0.1", taken.getsockname()[1])


@pytest.mark.parametrize("kind", ["mt", "lm"])
def test_server_explain_and_qkv_explain_explain_the_same_output(kind: str, request, tmp_path, capsys) -> None:
    """One explain_text behind both: a translation model's greedy translation, a language model's
    greedy continuation of the prompt (the prompt's tokens first), the same tokens either way."""
    import html

    from qkv.explain import explain_text

    client = request.getfixturevalue(kind)
    run = client.app.state.engine.run
    d = client.post("/v1/explain", json={"text": "hello", "max_new_tokens": 6}).json()
    out = tmp_path / "explain.html"
    assert main(["explain", "--model", str(run.path), "hello", "--max-new-tokens", "6", "--layer", "1", "--head", "1",
                 "--out", str(out)]) == 0
    err, page = capsys.readouterr().err, out.read_text()
    # the same steps, counted the same way: the server's walk[1][1] is the page of --layer 1 --head 1
    short = {"encoder": "enc", "decoder": "dec", "cross": "cross"}
    for m in d["attention"]:
        section = re.search(rf"<details data-attention='{short[m['kind']]}'[^>]*>(.*?)</details>", page, re.S).group(1)
        assert section.startswith("<summary>layer 1 ") and ", head 1</summary>" in section
        named = [t for step in m["walk"][1][1] for t in step["tables"] if t["name"]]
        assert {"w_q", "q", "k", "v", "scores", "masked", "weights", "mixed", "w_o", "head_out"} <= {t["name"] for t in named}
        for t in named:
            body = re.search(rf"<table class='m' data-tensor='{t['name']}'>(.*?)</table>", section, re.S).group(1)
            rows = [[html.unescape(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", r)] for r in re.findall(r"<tr>(.*?)</tr>", body)]
            assert [r for r in rows if r] == t["cells"], (m["kind"], t["name"])
    e = explain_text(run, "hello", max_new_tokens=6)
    decoder_input = e.trace.tgt.tokens
    assert e.output and d["output"] == run.tgt_tokenizer.decode(e.output)
    what = "translation" if kind == "mt" else "continuation"
    assert f"explaining the model's own greedy {what} {d['output']!r}" in err
    assert f"<td><b>decoder input</b></td><td>{html.escape(' '.join(decoder_input))}</td>" in page
    if kind == "mt":
        assert d["source_tokens"] == e.trace.src.tokens == list("hello")
        assert d["output_tokens"] == decoder_input[1:]                       # after <bos>
        assert len(d["steps"]) == len(e.output) + 1
    else:
        assert d["source_tokens"] == [] and d["output_tokens"] == decoder_input
        assert decoder_input[:5] == list("hello") and len(decoder_input) == 5 + len(e.output)
        assert len(d["steps"]) == len(e.output) + 1                           # from the prompt's last token on
