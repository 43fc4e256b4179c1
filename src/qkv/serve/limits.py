"""What one request may cost the server: its Host, its headers, its body's size and time.

`RequestLimits` is a plain ASGI middleware put in front of the app by `create_app`. Before the
app sees a request it checks, in order:

- the number of headers (at most `MAX_HEADERS`, else 431) and their size (`MAX_HEADER_BYTES`,
  else 431; uvicorn's HTTP parser already refuses a larger head with 400);
- the Host header against the names the server answers to (else 403): a web page that points a
  name it owns at 127.0.0.1 (DNS rebinding) reaches the server under that name, not ours;
- a declared Content-Length larger than `MAX_BODY_BYTES` (413 at once, nothing read).

It then counts the body's bytes as they arrive, chunked or not: past `MAX_BODY_BYTES` the app
stops reading, the client gets 413 and the connection is closed, so the rest is never held in
memory. A body that has not fully arrived `body_timeout` seconds after its headers gets 408
(and the connection closed). Every refusal is JSON with a one-line `message`, as the app's own.

`protocol(header_timeout)` is uvicorn's h11 protocol with one more timer: a connection must
complete its request headers within `header_timeout` seconds of opening (uvicorn itself times
out only idle keep-alive connections, so a client that sends half a request line waited forever).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from qkv.serve.schemas import MAX_BODY_BYTES

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MAX_HEADERS = 100               # header lines per request (browsers send about 15)
MAX_HEADER_BYTES = 16 * 1024    # request line and headers together
BODY_TIMEOUT = 10.0             # seconds for the whole body to arrive, from the end of the headers
HEADER_TIMEOUT = 10.0           # seconds from opening a connection to the end of its request headers
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")
ANY_HOST = "*"


class _Refused(Exception):
    """The body broke a limit while the app was reading it; `status` and `message` say which."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


class RequestLimits:
    """ASGI middleware: headers, Host and body limits (see the module's doc)."""

    def __init__(self, app: ASGIApp, allowed_hosts: Iterable[str] = LOOPBACK_HOSTS,
                 max_body_bytes: int = MAX_BODY_BYTES, body_timeout: float = BODY_TIMEOUT,
                 max_headers: int = MAX_HEADERS, max_header_bytes: int = MAX_HEADER_BYTES) -> None:
        self.app = app
        self.hosts = HostRule(allowed_hosts)
        self.max_body_bytes, self.body_timeout = max_body_bytes, body_timeout
        self.max_headers, self.max_header_bytes = max_headers, max_header_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self._check_head(scope)
        if refusal is not None:
            await _refuse(send, *refusal)
            return
        reader = _BodyReader(receive, self.max_body_bytes, self.body_timeout)
        started = False

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if reader.refused is not None:      # the app answers its own error to a broken body: ours wins
                return
            started = True
            await send(message)

        try:
            await self.app(scope, reader.receive, guarded_send)
        except Exception:
            if reader.refused is None:
                raise
        if reader.refused is not None and not started:
            await _refuse(send, reader.refused.status, reader.refused.message)

    def _check_head(self, scope: Scope) -> tuple[int, str] | None:
        headers: list[tuple[bytes, bytes]] = scope.get("headers", [])
        if len(headers) > self.max_headers:
            return 431, f"the request has {len(headers)} headers; at most {self.max_headers} are accepted"
        size = sum(len(k) + len(v) + 4 for k, v in headers)
        if size > self.max_header_bytes:
            return 431, f"the request headers are {size} bytes; at most {self.max_header_bytes} are accepted"
        hosts = [v for k, v in headers if k.lower() == b"host"]
        host = hosts[0].decode("latin-1") if len(hosts) == 1 else None
        if host is None or not self.hosts.allows(host):
            return 403, self.hosts.refusal(host)
        lengths = [v for k, v in headers if k.lower() == b"content-length"]
        if lengths and (not lengths[0].isdigit() or int(lengths[0]) > self.max_body_bytes):
            return 413, _too_large(self.max_body_bytes)
        return None


class _BodyReader:
    """`receive` for the app: counts body bytes and bounds the time until the body is complete.
    After the body (or for a request without one) it passes messages through untimed, so the app
    can still wait for the client to disconnect."""

    def __init__(self, receive: Receive, max_bytes: int, timeout: float) -> None:
        self._receive, self.max_bytes, self.timeout = receive, max_bytes, timeout
        self.deadline = time.monotonic() + timeout
        self.seen = 0
        self.complete = False
        self.refused: _Refused | None = None

    async def receive(self) -> Message:
        if self.refused is not None:
            raise self.refused
        if self.complete:
            return await self._receive()
        try:
            message = await asyncio.wait_for(self._receive(), max(0.0, self.deadline - time.monotonic()))
        except TimeoutError:
            self.refused = _Refused(408, f"the request body did not arrive within {self.timeout:g} s; "
                                         f"send the whole body at once")
            raise self.refused from None
        if message["type"] == "http.request":
            self.seen += len(message.get("body", b""))
            if self.seen > self.max_bytes:
                self.refused = _Refused(413, _too_large(self.max_bytes))
                raise self.refused
            self.complete = not message.get("more_body", False)
        else:
            self.complete = True
        return message


class HostRule:
    """Which Host headers are answered. An entry is a name or address (any port), `name:port`
    (that port only; a Host without a port means port 80), `[v6 address]` with or without a port,
    or `*` (every Host)."""

    def __init__(self, allowed: Iterable[str]) -> None:
        self.entries = [_split_host(a.strip().lower()) for a in allowed if a.strip()]
        self.any = any(name == ANY_HOST for name, _ in self.entries)
        self.names = ", ".join(a for a in allowed if a.strip()) or "none"

    def allows(self, host: str) -> bool:
        if self.any:
            return True
        name, port = _split_host(host.strip().lower())
        return any(name == n and (p is None or (port or 80) == p) for n, p in self.entries)

    def refusal(self, host: str | None) -> str:
        if host is None:
            return f"the request needs exactly one Host header; this server answers to {self.names}"
        shown = host if len(host) <= 80 else host[:80] + "..."
        name = _split_host(host.strip().lower())[0] or "NAME"
        return (f"this server does not answer to Host {shown!r} (it answers to {self.names}); "
                f"if {name!r} is meant to reach it, start it with --allow-host {name}")


def _split_host(host: str) -> tuple[str, int | None]:
    """'localhost:8000' -> ('localhost', 8000), '[::1]' -> ('[::1]', None), '::1' -> ('[::1]', None)."""
    if host.startswith("["):
        name, _, rest = host.partition("]")
        name, port = name + "]", rest[1:] if rest.startswith(":") else ""
    elif host.count(":") > 1:                   # a bare IPv6 address
        name, port = f"[{host}]", ""
    else:
        name, _, port = host.partition(":")
    return name, int(port) if port.isdigit() and len(port) <= 5 else (None if not port else -1)


def _too_large(limit: int) -> str:
    return f"the request body is larger than {limit} bytes; send fewer or shorter texts"


async def _refuse(send: Send, status: int, message: str) -> None:
    body = json.dumps({"detail": message, "message": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


def serving_hosts(host: str, port: int, extra: Iterable[str] = ()) -> list[str]:
    """The Host values `qkv serve --host HOST --port PORT` answers to: the loopback names and HOST,
    each with PORT, then `extra` (`--allow-host`) as given. Bound to every interface (0.0.0.0, ::),
    HOST itself is no name a client uses: give the names with --allow-host."""
    names = [*LOOPBACK_HOSTS]
    if host not in ("0.0.0.0", "::", ""):
        names.append(_split_host(host.lower())[0])
    return [*dict.fromkeys(f"{n}:{port}" for n in names), *extra]


def protocol(header_timeout: float = HEADER_TIMEOUT) -> type:
    """uvicorn's h11 protocol, closing a connection that has not sent a complete request head
    `header_timeout` seconds after it opened or after its last response. (uvicorn's own keep-alive
    timer is cancelled by any byte received, so a client that sends half a request line, or trickles
    a body the app did not read, would hold the connection forever.)"""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class TimedH11Protocol(H11Protocol):
        _head_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:  # type: ignore[override]
            super().connection_made(transport)  # type: ignore[arg-type]
            self._arm()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self._serving():
                self._disarm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _serving(self) -> bool:
            """A request's head is in and its response not yet complete."""
            return self.cycle is not None and not self.cycle.response_complete

        def _arm(self) -> None:
            self._disarm()
            self._head_timer = self.loop.call_later(header_timeout, self._too_slow)

        def _disarm(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _too_slow(self) -> None:
            self._head_timer = None
            if self._serving() or self.transport.is_closing():
                return
            try:
                self.conn.send(h11.ConnectionClosed())
            except h11.LocalProtocolError:
                pass
            self.transport.close()

    return TimedH11Protocol
