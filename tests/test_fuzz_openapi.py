"""Schemathesis over the server's own OpenAPI document (/arcext/v1/openapi.json): every operation, generated
from its schema (path parameters carry the spec's patterns, so cases reach the handlers), sent over real HTTP
with an Owner token. No input may get a 5xx, and every answer must match the documented response schemas.

Fixed seed (derandomized Hypothesis) and a bounded number of examples per operation, so the run is repeatable
and fast; the number of cases sent is printed at the end of the module."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from arcext.testing import ArcextServer
from conftest import put_extension, put_machine

EXAMPLES_PER_OPERATION = 20
CASES: list[str] = []


@pytest.fixture(scope="module")
def fuzz_server() -> Iterator[ArcextServer]:
    with ArcextServer(simulate=True) as arc:
        with arc.session() as s:
            put_machine(s, arc, "m1")
            put_extension(s, arc, "cse", "m1")
        yield arc


@pytest.fixture(scope="module")
def fuzz_session(fuzz_server: ArcextServer) -> Iterator[requests.Session]:
    with fuzz_server.session() as s:
        yield s


@pytest.fixture(scope="module", autouse=True)
def report_case_count(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    line = f"schemathesis: sent {len(CASES)} cases over {len(set(CASES))} operations"
    capture = request.config.pluginmanager.getplugin("capturemanager")
    if capture is not None:
        with capture.global_and_fixture_disabled():
            print(f"\n{line}")
    else:
        print(line)


def _served_openapi() -> dict[str, Any]:
    """The document a running server serves at /arcext/v1/openapi.json (fetched over HTTP once, at collection)."""
    with ArcextServer(simulate=True) as arc, arc.session() as s:
        r = s.get(f"{arc.url}/arcext/v1/openapi.json")
        r.raise_for_status()
        document: dict[str, Any] = r.json()
        return document


schema = schemathesis.openapi.from_dict(_served_openapi())


@schema.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_no_input_gets_a_5xx_and_responses_match_the_spec(
    case: schemathesis.Case, fuzz_server: ArcextServer, fuzz_session: requests.Session
) -> None:
    CASES.append(f"{case.operation.method.upper()} {case.operation.path}")
    response = case.call(base_url=fuzz_server.url, session=fuzz_session, timeout=30)
    case.validate_response(response, checks=(not_a_server_error, response_schema_conformance))
    assert response.status_code < 500, response.text
