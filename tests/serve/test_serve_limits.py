"""The server's limits over raw sockets on 127.0.0.1, against uvicorn in this process.

Every socket operation has a timeout and every loop a bound: the module takes a few seconds.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install 'qkv[serve]'")
uvicorn = pytest.importorskip("uvicorn", reason="the serve extra is not installed: pip install 'qkv[serve]'")

from tests.serve_runs import tiny_run  # noqa: E402

from qkv.serve import create_app  # noqa: E402
from qkv.serve.app import server_config  # noqa: E402
from qkv.serve.limits import HostRule, serving_hosts  # noqa: E402
from qkv.serve.schemas import MAX_BODY_BYTES  # noqa: E402

TIMEOUT = 1.0          # the server's header and body timeout in these tests
SOCKET_TIMEOUT = 5.0   # no socket operation of a test waits longer


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[tuple[int, uvicorn.Server]]:
    run = tiny_run(Path(tmp_path_factory.mktemp("limits")))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = create_app(run, allowed_hosts=serving_hosts("127.0.0.1", port, ["qkv.example"]), body_timeout=TIMEOUT)
    server = uvicorn.Server(server_config(app, "127.0.0.1", port, log_level="warning", timeout=TIMEOUT))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "the server did not start within 10 s"
    yield port, server
    server.should_exit = True
    thread.join(timeout=10)


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT)
    sock.settimeout(SOCKET_TIMEOUT)
    return sock


def read_all(sock: socket.socket, limit: int = 1 << 16) -> bytes:
    """What the server sends until it closes the connection (at most `limit` bytes)."""
    data = b""
    while len(data) < limit:
        try:
            chunk = sock.recv(4096)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return data


def status_and_json(response: bytes) -> tuple[int, dict]:
    head, _, body = response.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body) if body.startswith(b"{") else {}


def request(port: int, head: str, body: bytes = b"") -> tuple[int, dict]:
    with connect(port) as sock:
        sock.sendall(head.encode("latin-1") + body)
        return status_and_json(read_all(sock))


def post_head(port: int, host: str | None = None, extra: str = "") -> str:
    host_line = f"Host: {host or f'127.0.0.1:{port}'}\r\n"
    return f"POST /v1/translate HTTP/1.1\r\n{host_line}Content-Type: application/json\r\n{extra}"


def test_a_good_host_is_answered(server) -> None:
    port, _ = server
    body = b'{"texts": ["abc"], "max_new_tokens": 3}'
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", "qkv.example"):
        status, answer = request(port, post_head(port, host, f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"), body)
        assert status == 200 and len(answer["translations"]) == 1, (host, answer)


@pytest.mark.parametrize("host", ["evil.example", "evil.example:{port}", "localhost:1", "127.0.0.1.evil.example"])
def test_another_host_is_403_in_one_line(server, host: str) -> None:
    port, _ = server
    status, answer = request(port, f"GET /health HTTP/1.1\r\nHost: {host.format(port=port)}\r\nConnection: close\r\n\r\n")
    assert status == 403 and "--allow-host" in answer["message"] and "\n" not in answer["message"]


def test_host_rule() -> None:
    rule = HostRule(["localhost:8000", "[::1]:8000", "box"])
    assert rule.allows("LOCALHOST:8000") and rule.allows("[::1]:8000") and rule.allows("box:1234") and rule.allows("box")
    assert not rule.allows("localhost:8001") and not rule.allows("localhost") and not rule.allows("[::1]")
    assert HostRule(["*"]).allows("anything:1") and not HostRule([]).allows("localhost")
    assert HostRule(["example:80"]).allows("example")
    assert serving_hosts("0.0.0.0", 80, ["a"]) == ["127.0.0.1:80", "localhost:80", "[::1]:80", "a"]


def test_a_chunked_body_past_the_limit_is_413_and_the_rest_is_never_read(server) -> None:
    port, _ = server
    chunk = b"a" * 65536
    sent = 0
    with connect(port) as sock:
        sock.sendall(post_head(port, extra="Transfer-Encoding: chunked\r\n\r\n").encode())
        try:
            while sent < 100 * MAX_BODY_BYTES:          # 100 MiB offered; the server stops near 1 MiB
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        response = read_all(sock)
    assert sent < 20 * MAX_BODY_BYTES, f"the server read {sent} bytes before refusing"
    if response:                                     # a reset may drop the answer after it was sent
        status, answer = status_and_json(response)
        assert status == 413 and "larger than" in answer["message"]


def test_a_large_content_length_is_413_before_the_body(server) -> None:
    port, _ = server
    head = post_head(port, extra=f"Content-Length: {100 * MAX_BODY_BYTES}\r\n\r\n")
    status, answer = request(port, head)             # no body sent at all
    assert status == 413 and "larger than" in answer["message"]


def test_memory_is_given_back_after_oversize_requests(server) -> None:
    port, _ = server
    before = rss_bytes()
    for _ in range(3):
        test_a_chunked_body_past_the_limit_is_413_and_the_rest_is_never_read(server)
    after = rss_bytes()
    assert after <= 1.1 * before, f"resident memory grew from {before >> 20} to {after >> 20} MiB"


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))


def test_a_body_that_stops_is_408_and_closed_within_the_timeout(server) -> None:
    port, _ = server
    start = time.monotonic()
    with connect(port) as sock:
        sock.sendall(post_head(port, extra="Content-Length: 100\r\n\r\n").encode() + b'{"texts": ')
        response = read_all(sock)                    # returns when the server closes the connection
    assert time.monotonic() - start < TIMEOUT + 3
    status, answer = status_and_json(response)
    assert status == 408 and "did not arrive" in answer["message"]


def test_slow_headers_are_closed_within_the_timeout(server) -> None:
    port, _ = server
    start = time.monotonic()
    with connect(port) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")   # the headers never end
        assert read_all(sock) == b""                                     # closed, nothing answered
    assert time.monotonic() - start < TIMEOUT + 3
    with connect(port) as sock:                                          # nothing sent at all
        assert read_all(sock) == b""
    assert time.monotonic() - start < 2 * (TIMEOUT + 3)


def test_too_many_headers_is_431(server) -> None:
    port, _ = server
    many = "".join(f"X-{i}: {i}\r\n" for i in range(150))
    status, answer = request(port, f"GET /health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{many}Connection: close\r\n\r\n")
    assert status == 431 and "headers" in answer["message"]


def test_too_large_headers_are_refused(server) -> None:
    port, _ = server
    with connect(port) as sock:
        sock.sendall(f"GET /health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-Big: {'a' * 20000}\r\n\r\n".encode())
        response = read_all(sock)
    assert response.split(b" ", 2)[1] in (b"400", b"431")


def test_cli_states_the_limits_and_refuses_a_bad_timeout(capsys) -> None:
    from qkv.cli import main

    try:
        main(["serve", "--help"])
    except SystemExit:
        pass
    text = " ".join(capsys.readouterr().out.split())
    assert "--allow-host" in text and "1 MiB" in text and "--timeout" in text and "DNS rebinding" in text
    for bad in ("0", "-1", "nan", "inf"):
        assert main(["serve", "--model", "/nonexistent/run", "--timeout", bad]) == 2
        err = capsys.readouterr().err.strip()
        assert "--timeout must be a positive number" in err and "\n" not in err, (bad, err)
