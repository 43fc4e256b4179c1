"""The FastAPI app: JSON endpoints over `Engine`, the explorer page at `/`.

    app = create_app("runs/reverse")        # or create_app(load_run(...)); test it with TestClient
    serve("runs/reverse", host="127.0.0.1", port=8000)

Every deliberate error answers with a 4xx (or 503 when the queue is full) and a JSON body whose
`detail` says what was wrong and what to do; validation errors also carry a one-line `message`.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import json
import math
import os
import socket
import time
from concurrent.futures import Future
from importlib import resources
from pathlib import Path
from collections.abc import Iterable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

import qkv
from qkv.errors import QkvError
from qkv.explain.i18n import LANGUAGES, STRINGS
from qkv.serve.engine import LANGUAGE_MODEL, TRANSLATION, Engine
from qkv.serve.limits import (
    BODY_TIMEOUT,
    HEADER_TIMEOUT,
    LOOPBACK_HOSTS,
    MAX_HEADER_BYTES,
    RequestLimits,
    protocol,
    serving_hosts,
)
from qkv.serve.schemas import (
    ExplainRequest,
    ExplainResponse,
    GenerateRequest,
    GenerateResponse,
    Health,
    ModelInfo,
    TranslateRequest,
    TranslateResponse,
)
from qkv.serve.worker import ModelWorker

STATIC = Path(str(resources.files("qkv.serve") / "static"))


def page_html() -> str:
    """The explorer page with the pages' table of words (qkv.explain.i18n, English and Korean) in it,
    so that it speaks either language from its first paint, and switches without asking the server."""
    words = json.dumps({"languages": LANGUAGES, "strings": STRINGS}, ensure_ascii=False).replace("</", "<\\/")
    return (STATIC / "index.html").read_text(encoding="utf-8").replace(
        "<!-- STRINGS: the server puts the pages' table here (qkv.explain.i18n) -->",
        f'<script id="strings" type="application/json">{words}</script>')


class ErrorMessage(BaseModel):
    detail: str
    message: str = Field(description="the same one-line message (every error body has one)")


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorMessage, "description": "the endpoint does not fit the model"},
    403: {"model": ErrorMessage, "description": "the Host header is not a name this server answers to"},
    408: {"model": ErrorMessage, "description": "the body did not arrive in time"},
    413: {"model": ErrorMessage, "description": "the request body is too large"},
    415: {"model": ErrorMessage, "description": "the body is not sent as application/json"},
    431: {"model": ErrorMessage, "description": "too many or too large request headers"},
    503: {"model": ErrorMessage, "description": "too many requests queued"},
}


def create_app(run: Any, ct2_model: str | os.PathLike | None = None,
               allowed_hosts: Iterable[str] = LOOPBACK_HOSTS, body_timeout: float = BODY_TIMEOUT) -> FastAPI:
    """The app for a loaded run (`qkv.run.Run`) or a run directory path; with `ct2_model`
    (the run exported by `qkv export --format ct2`) translations run on CTranslate2.
    It answers only requests whose Host is in `allowed_hosts` (names or addresses, any port;
    `name:port`; `*` for all: see qkv.serve.limits.HostRule): FastAPI's TestClient sends
    Host `testserver`, so a test passes `allowed_hosts=["testserver"]`. A body must arrive
    within `body_timeout` seconds."""
    if isinstance(run, (str, os.PathLike)):
        from qkv.run import load_run

        run = load_run(run)
    engine = Engine(run, ct2_model)
    worker = ModelWorker(engine)
    app = FastAPI(
        title="qkv",
        version=qkv.__version__,
        description=f"A {engine.kind} Transformer from {run.path} (translating on {engine.engine}). "
                    f"The explorer page is at /.",
    )
    app.state.engine, app.state.worker = engine, worker
    _add_error_handlers(app)
    _add_json_check(app)
    _add_routes(app, engine, worker)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(RequestLimits, allowed_hosts=list(allowed_hosts), body_timeout=body_timeout)  # outermost
    return app


def _add_routes(app: FastAPI, engine: Engine, worker: ModelWorker) -> None:
    page_text = page_html()

    @app.get("/", include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(page_text)

    @app.get("/health", response_model=Health)
    async def health() -> dict[str, Any]:
        return {"status": "ok", "kind": engine.kind, "queued": worker.pending}

    @app.get("/v1/model", response_model=ModelInfo)
    async def model_info() -> dict[str, Any]:
        return engine.info()

    @app.post("/v1/translate", response_model=TranslateResponse, responses=ERRORS)
    async def translate(req: TranslateRequest, request: Request) -> dict[str, Any]:
        """Translate a batch of texts (greedy, beam search or sampling)."""
        engine.require(TRANSLATION)
        start = time.perf_counter()
        translations = await answer(request, worker.translate(req), worker)
        return {"translations": translations, "elapsed_ms": _ms_since(start)}

    @app.post("/v1/generate", response_model=GenerateResponse, responses=ERRORS)
    async def generate(req: GenerateRequest, request: Request) -> dict[str, Any]:
        """Continue a prompt with a language model."""
        engine.require(LANGUAGE_MODEL)
        start = time.perf_counter()
        result = await answer(request, worker.call(lambda: engine.generate(req)), worker)
        return {**result, "elapsed_ms": _ms_since(start)}

    @app.post("/v1/explain", response_model=ExplainResponse, responses=ERRORS)
    async def explain(req: ExplainRequest, request: Request) -> dict[str, Any]:
        """One sentence with its output (and the engine that wrote it), tokens, every attention map with
        each head's steps as on the `qkv explain` page, and the top-k per step."""
        return await answer(request, worker.call(lambda: engine.explain(req.text, req.top_k, req.max_new_tokens)), worker)


async def answer(request: Request, job: Future, worker: ModelWorker) -> Any:
    """The worker's result for `job`; if the client disconnects, the job is abandoned: one still
    waiting in the queue never runs, one already decoding stops at its next step."""
    result = asyncio.wrap_future(job)
    gone = asyncio.ensure_future(_disconnect(request))
    try:
        done, _ = await asyncio.wait({result, gone}, return_when=asyncio.FIRST_COMPLETED)
        if result in done:
            return result.result()
        worker.abandon(job)
        result.cancel()
        raise ClientGone()
    finally:
        gone.cancel()


async def _disconnect(request: Request) -> None:
    """Returns when the client closes the connection (the body has been read: nothing else comes)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


class ClientGone(Exception):
    """The client closed the connection before its answer was ready (nobody reads the response)."""


def _ms_since(start: float) -> float:
    return round(1000 * (time.perf_counter() - start), 2)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ClientGone)
    async def client_gone(request: Request, exc: ClientGone) -> JSONResponse:
        return error_response("the client closed the connection; the request was cancelled", 499)

    @app.exception_handler(QkvError)
    async def qkv_error(request: Request, exc: QkvError) -> JSONResponse:
        return error_response(_one_line(exc), getattr(exc, "status", 422))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = str(exc.detail)
        if message == "There was an error parsing the body":
            message = "the body cannot be read as JSON (is it UTF-8?); send a JSON object such as {\"texts\": [\"hello\"]}"
        return error_response(message, exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{k: e[k] for k in ("loc", "msg", "type") if k in e} for e in exc.errors()]
        return JSONResponse(
            {"detail": jsonable_encoder(errors), "message": validation_message(errors)}, status_code=422
        )


def error_response(message: str, status: int) -> JSONResponse:
    """`{"detail": ..., "message": message}`; a 422's detail is a list, as FastAPI documents it."""
    detail: Any = message
    if status == 422:
        detail = [{"loc": ["body"], "msg": message, "type": "value_error"}]
    return JSONResponse({"detail": detail, "message": message}, status_code=status)


def validation_message(errors: list[dict[str, Any]]) -> str:
    """'body.texts.0: String should have at least 1 character' (+ 'and 2 more problems')."""
    if not errors:
        return "the request is not valid"
    first = errors[0]
    where = ".".join(str(p) for p in first.get("loc", ()))
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    if first.get("type") == "json_invalid":
        return f"the body is not valid JSON{more}; send a JSON object such as {{\"texts\": [\"hello\"]}}"
    return f"{where}: {first.get('msg', 'invalid')}{more}"


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _add_json_check(app: FastAPI) -> None:
    """415 for a POST to the API whose body is not declared as JSON (the size, Host and headers
    are checked before, by qkv.serve.limits.RequestLimits)."""
    @app.middleware("http")
    async def json_only(request: Request, call_next):
        if request.method == "POST" and request.url.path.startswith("/v1/") and not _is_json(request):
            kind = request.headers.get("content-type") or "none"
            return error_response(
                f"the body must be JSON sent with Content-Type: application/json (got {kind}); "
                f"e.g. curl -H 'Content-Type: application/json' -d '{{\"texts\": [\"hello\"]}}'", 415
            )
        return await call_next(request)


def _is_json(request: Request) -> bool:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    return kind == "application/json" or (kind.startswith("application/") and kind.endswith("+json"))


def serve(run_dir: str | os.PathLike, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info",
          engine: str = "qkv", ct2_model: str | os.PathLike | None = None, allow_hosts: Iterable[str] = (),
          timeout: float = BODY_TIMEOUT) -> None:
    """Load `run_dir` and serve it with uvicorn until Ctrl-C (translating on `engine`). It answers
    requests whose Host is a loopback name or `host`, with `port`, or one of `allow_hosts`; request
    headers and bodies each have `timeout` seconds to arrive."""
    import uvicorn

    from qkv.text import check_engine

    check_engine(engine, ct2_model)
    if not (math.isfinite(timeout) and timeout > 0):
        raise QkvError(f"--timeout must be a positive number of seconds, not {timeout:g}")
    hosts = serving_hosts(host, port, allow_hosts)
    app = create_app(run_dir, ct2_model, allowed_hosts=hosts, body_timeout=timeout)
    _check_bindable(host, port)
    if not _is_loopback(host):
        print(f"warning: serving on {host}: anyone who can reach this machine can use the model; "
              f"it answers to Host {', '.join(hosts)} (add names with --allow-host)")
    print(f"qkv: {app.state.engine.kind} model from {run_dir} on {app.state.engine.engine}; "
          f"open http://{_url_host(host)}:{port}/")
    uvicorn.Server(server_config(app, host, port, log_level, timeout)).run()


def server_config(app: Any, host: str, port: int, log_level: str = "info", timeout: float = HEADER_TIMEOUT) -> Any:
    """uvicorn's configuration for `app`: the h11 parser with a header timeout of `timeout` s and
    request heads of at most MAX_HEADER_BYTES (a larger one gets 400), idle keep-alive 5 s."""
    import uvicorn

    return uvicorn.Config(app, host=host, port=port, log_level=log_level, http=protocol(timeout),
                          h11_max_incomplete_event_size=MAX_HEADER_BYTES, timeout_keep_alive=5)


def _check_bindable(host: str, port: int) -> None:
    """A one-line error now rather than uvicorn's log lines when the address cannot be used."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        raise QkvError(f"cannot resolve host {host!r}; give an address such as 127.0.0.1") from None
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE or (exc.errno == errno.EACCES and port < 1024):
                advice = "pick another --port"
            else:                                # e.g. EADDRNOTAVAIL: no interface has this address
                advice = "give an address of this machine as --host (127.0.0.1 for this machine only, 0.0.0.0 for all)"
            raise QkvError(f"cannot listen on {host}:{port} ({exc.strerror}); {advice}") from None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _url_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "::") else host
