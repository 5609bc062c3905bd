"""Property-based fuzzing of the api from its own OpenAPI document (schemathesis), against a
real uvicorn on loopback and a real PostgreSQL (rung L1), authenticated as a real user:
no 5xx, every response conforms to the document, every error is application/problem+json.

Bounded: at most 25 generated examples per operation and phase."""

from __future__ import annotations

import uuid

import httpx
import pytest
import schemathesis
from api_testlib import PASSWORD, make_settings
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from todo_api.app import create_api_app
from todo_shared.problems import PROBLEM_JSON
from todo_shared.testing import ServerThread

pytestmark = pytest.mark.integration

# The document is the app's own; building it needs no database.
schema = schemathesis.openapi.from_dict(create_api_app(make_settings("postgresql://unused/db")).openapi())


@schemathesis.check
def errors_are_problem_json(ctx, response, case) -> None:
    if response.status_code >= 400:
        content_type = (response.headers.get("content-type") or [""])[0]
        assert content_type == PROBLEM_JSON, f"{response.status_code} answered as {content_type!r}"
        body = response.json()
        assert body["status"] == response.status_code
        assert body["title"]


@schemathesis.check
def no_server_error(ctx, response, case) -> None:
    assert response.status_code < 500, f"server error {response.status_code}: {response.content[:300]!r}"


@pytest.fixture(scope="module")
def live_api(postgres, api_template):
    """The real app under uvicorn on a free port, with a signed-in user and a few tasks."""
    name = f"fuzz_{uuid.uuid4().hex[:8]}"
    postgres.psql(f'CREATE DATABASE "{name}" TEMPLATE "{api_template}"')
    app = create_api_app(make_settings(postgres.dsn(name)))
    with ServerThread(app) as server:
        email = "fuzzer@example.com"
        httpx.post(f"{server.url}/api/v1/auth/register", json={"email": email, "password": PASSWORD})
        token = httpx.post(
            f"{server.url}/api/v1/auth/login", json={"email": email, "password": PASSWORD}
        ).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        for title in ("one", "two"):
            httpx.post(f"{server.url}/api/v1/tasks", json={"title": title, "tags": ["fuzz"]}, headers=headers)
        yield server.url, headers
    postgres.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# One test per operation, named by it: schemathesis's own parametrize gives all twelve the same
# node id, which pytest-xdist (make test's workers) takes for one test and runs once.
OPERATIONS = [result.ok() for result in schema.get_all_operations()]


@pytest.mark.parametrize("operation", OPERATIONS, ids=[op.label for op in OPERATIONS])
def test_api_never_fails_and_keeps_its_contract(operation, live_api):
    base_url, headers = live_api

    @given(case=operation.as_strategy())
    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
    def call(case):
        case.call_and_validate(
            base_url=base_url,
            headers=headers,
            timeout=30,
            checks=[
                no_server_error,
                errors_are_problem_json,
                status_code_conformance,
                content_type_conformance,
                response_schema_conformance,
                response_headers_conformance,
            ],
        )

    call()
