"""Property-based requests generated from the OpenAPI schema (schemathesis): never a 5xx, and
every response matches the documented status codes, content types and schemas.

Bounded: few examples per operation, and models of max_len 12 so no generated request decodes
for long. Requests go through FastAPI's TestClient (schemathesis builds them, checks the answers).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install 'qkv[serve]'")
pytest.importorskip("httpx", reason="TestClient needs httpx: pip install 'qkv[serve]'")
schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is not installed")

from fastapi.testclient import TestClient  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from tests.serve_runs import tiny_run  # noqa: E402

from qkv.serve import create_app  # noqa: E402

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
BOUNDED = settings(max_examples=10, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))

_RUNS = Path(tempfile.mkdtemp(prefix="qkv-serve-schema-"))
MT_APP = create_app(tiny_run(_RUNS / "mt", max_len=12), allowed_hosts=["testserver"])
LM_APP = create_app(tiny_run(_RUNS / "lm", "decoder-only", max_len=12), allowed_hosts=["testserver"])
mt_schema = schemathesis.openapi.from_asgi("/openapi.json", MT_APP)
lm_schema = schemathesis.openapi.from_asgi("/openapi.json", LM_APP)
for _schema in (mt_schema, lm_schema):
    _schema.config.phases.coverage.enabled = False      # its hundreds of boundary cases take minutes


@pytest.fixture(scope="module")
def mt_client() -> TestClient:
    with TestClient(MT_APP) as client:
        yield client


@pytest.fixture(scope="module")
def lm_client() -> TestClient:
    with TestClient(LM_APP) as client:
        yield client


def call_and_check(case: Any, client: TestClient) -> None:
    """Send the generated request through `client` and run the checks on its answer."""
    kwargs = case.as_transport_kwargs(base_url="http://testserver")
    if isinstance(kwargs.get("data"), (bytes, str)):
        kwargs["content"] = kwargs.pop("data")           # raw (often invalid) bodies
    if not kwargs.get("cookies"):
        kwargs.pop("cookies", None)
    response = client.request(**kwargs)
    case.validate_response(response, checks=CHECKS)


@mt_schema.parametrize()
@BOUNDED
def test_translation_server_never_fails(case, mt_client: TestClient) -> None:
    call_and_check(case, mt_client)


@lm_schema.parametrize()
@BOUNDED
def test_language_model_server_never_fails(case, lm_client: TestClient) -> None:
    call_and_check(case, lm_client)
