"""The shared app factory: request ids, problem+json for every error, body limit, metrics by
route template, health and readiness (rung L0: in-process ASGI)."""

from __future__ import annotations

import asyncio
import logging

import httpx
import pytest
from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.routing import Route
from todo_shared.app import add_readiness_check, create_app, mark_shutting_down
from todo_shared.problems import PROBLEM_JSON, Problem
from todo_shared.settings import ServiceSettings

pytestmark = pytest.mark.unit


class Item(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=10)
    size: int = Field(ge=1, le=5)


def build_app(max_body_bytes: int = 1024):
    router = APIRouter()

    @router.get("/items/{item_id}")
    async def get_item(item_id: int) -> dict:
        if item_id == 404:
            raise Problem(404, "No such item.", type_="urn:test:no-item", item_id=item_id)
        return {"id": item_id}

    @router.post("/items", status_code=201)
    async def create_item(item: Item) -> Item:
        return item

    @router.get("/boom")
    async def boom() -> dict:
        raise RuntimeError("secret internals: password=hunter2")

    settings = ServiceSettings(environment="test", service_name="svc", max_body_bytes=max_body_bytes)
    return create_app(settings, routers=[router])


@pytest.fixture
def app():
    return build_app()


@pytest.fixture
async def client(app):
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://svc") as c:
        yield c


def assert_problem(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    body = response.json()
    assert body["status"] == status
    assert body["title"]
    assert body["type"]
    assert body["request_id"] == response.headers["x-request-id"]
    return body


async def test_request_id_is_kept_when_valid_and_made_otherwise(client):
    kept = await client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert kept.headers["x-request-id"] == "abc-123"
    made = await client.get("/healthz", headers={"X-Request-ID": b"bad id with spaces" + b"\xe9"})
    assert made.headers["x-request-id"] != "bad id with spaces"
    assert len(made.headers["x-request-id"]) == 32
    fresh = await client.get("/healthz")
    assert fresh.headers["x-request-id"] != made.headers["x-request-id"]


async def test_healthz(client):
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "service": "svc"}


async def test_unknown_route_is_a_404_problem(client):
    body = assert_problem(await client.get("/nowhere"), 404)
    assert body["instance"] == "/nowhere"


async def test_wrong_method_is_a_405_problem_with_allow(client):
    response = await client.delete("/items/1")
    assert_problem(response, 405)
    assert response.headers["allow"] == "GET"


async def test_problem_raised_by_code_keeps_its_type_and_extensions(client):
    body = assert_problem(await client.get("/items/404"), 404)
    assert body["type"] == "urn:test:no-item"
    assert body["detail"] == "No such item."
    assert body["item_id"] == 404


async def test_validation_errors_name_each_field_and_do_not_echo_input(client):
    response = await client.post("/items", json={"name": "a-very-long-name-indeed", "size": 9, "extra": "x"})
    body = assert_problem(response, 422)
    fields = {e["field"]: e for e in body["errors"]}
    assert set(fields) == {"name", "size", "extra"}
    assert fields["extra"]["type"] == "extra_forbidden"
    assert fields["name"]["loc"] == ["body", "name"]
    assert "a-very-long-name-indeed" not in response.text


async def test_path_parameter_errors_are_problems(client):
    body = assert_problem(await client.get("/items/not-a-number"), 422)
    assert body["errors"][0]["loc"] == ["path", "item_id"]


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (b'{"name": "x",', "application/json"),
        (b"\xff\xfe", "application/json"),
        (b"[" * 5000 + b"]" * 5000, "application/json"),
        (b"name=x", "application/x-www-form-urlencoded"),
        (b'"just a string"', "application/json"),
        (b"", "application/json"),
    ],
    ids=["truncated", "not-utf8", "deeply-nested", "form", "string", "empty"],
)
async def test_malformed_bodies_are_4xx_problems(client, content, content_type):
    response = await client.post("/items", content=content, headers={"content-type": content_type})
    assert 400 <= response.status_code < 500, response.text
    assert_problem(response, response.status_code)


async def test_body_over_the_limit_is_a_413_problem(client):
    response = await client.post("/items", content=b"x" * 2000, headers={"content-type": "application/json"})
    assert_problem(response, 413)


async def test_unexpected_exception_is_a_500_problem_without_internals(client, caplog):
    with caplog.at_level(logging.ERROR, logger="todo.http"):
        response = await client.get("/boom")
    body = assert_problem(response, 500)
    assert "hunter2" not in response.text
    assert "RuntimeError" not in response.text
    assert "logged" in body["detail"]
    assert any("unhandled error" in r.getMessage() and r.exc_info for r in caplog.records)


async def test_metrics_use_route_templates_and_count_errors(client):
    for path in ("/items/1", "/items/2", "/items/404", "/boom", "/nowhere/77"):
        await client.get(path)
    text = (await client.get("/metrics")).text
    assert 'http_requests_total{method="GET",route="/items/{item_id}",status="200"} 2.0' in text
    assert 'http_requests_total{method="GET",route="/items/{item_id}",status="404"} 1.0' in text
    assert 'http_request_errors_total{method="GET",route="/boom",status="500"} 1.0' in text
    assert 'route="unmatched"' in text
    assert "/items/1" not in text.replace("/items/{item_id}", "")
    assert "/nowhere/77" not in text
    assert (
        'http_request_duration_seconds_bucket{le="0.005",method="GET",route="/items/{item_id}",status="200"}'
        in text
    )


async def test_unknown_methods_do_not_create_label_values(client):
    await client.request("BREW", "/items/1")
    text = (await client.get("/metrics")).text
    assert "BREW" not in text
    assert 'method="OTHER"' in text


async def test_readiness_runs_the_checks_and_names_what_failed(app, client):
    state = {"db": True}

    async def database() -> None:
        if not state["db"]:
            raise ConnectionError("connection refused")

    async def slow() -> None:
        await asyncio.sleep(0)

    add_readiness_check(app, "database", database)
    add_readiness_check(app, "sidecar", slow)
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "checks": {"database": "ok", "sidecar": "ok"}}

    state["db"] = False
    body = assert_problem(await client.get("/readyz"), 503)
    assert body["failed"] == ["database"]
    assert body["checks"]["database"].startswith("ConnectionError")
    assert body["checks"]["sidecar"] == "ok"


async def test_readiness_check_times_out():
    app = create_app(ServiceSettings(environment="test", readiness_timeout_seconds=0.1))

    async def hangs() -> None:
        await asyncio.sleep(10)

    add_readiness_check(app, "hangs", hangs)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://svc") as client:
        body = assert_problem(await client.get("/readyz"), 503)
    assert body["checks"]["hangs"] == "timed out after 0.1s"


async def test_readiness_is_503_once_shutdown_begins(app, client):
    assert (await client.get("/readyz")).status_code == 200
    mark_shutting_down(app)
    body = assert_problem(await client.get("/readyz"), 503)
    assert "shutting down" in body["detail"]
    assert (await client.get("/healthz")).status_code == 200


async def test_lifespan_exit_marks_the_app_shutting_down():
    app = build_app()
    async with app.router.lifespan_context(app):
        assert app.state.shutting_down is False
    assert app.state.shutting_down is True


async def test_access_log_line_carries_route_status_and_request_id(client, caplog):
    with caplog.at_level(logging.INFO, logger="todo.http"):
        await client.get("/items/5", headers={"X-Request-ID": "trace-me"})
    records = [r for r in caplog.records if getattr(r, "route", None) == "/items/{item_id}"]
    assert records
    assert records[0].status == 200
    assert records[0].path == "/items/5"


def test_openapi_documents_problem_json_for_errors(app):
    schema = app.openapi()
    responses = schema["paths"]["/items"]["post"]["responses"]
    assert "422" not in responses
    assert PROBLEM_JSON in responses["4XX"]["content"]
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    assert "ProblemDetails" in schema["components"]["schemas"]
    assert "/healthz" not in schema["paths"]


async def test_routers_are_served_from_the_apps_own_router_with_their_prefix_tags_and_dependencies():
    """No included-router node to walk on every request (FastAPI >= 0.137 keeps one per
    include_router): the app's router holds the routes themselves, and what the router gave
    them (prefix, tags, dependencies) still applies."""
    seen = []

    async def audit(request: Request) -> None:
        seen.append(request.url.path)

    router = APIRouter(prefix="/v1/things", tags=["things"], dependencies=[Depends(audit)])

    @router.get("/{thing_id}")
    async def get_thing(thing_id: int) -> dict:
        return {"id": thing_id}

    app = create_app(ServiceSettings(environment="test"), routers=[router])
    assert all(isinstance(route, Route) for route in app.router.routes)
    assert app.router.routes.index(router.routes[0]) < [r.path for r in app.router.routes].index("/healthz")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://svc") as client:
        assert (await client.get("/v1/things/7")).json() == {"id": 7}
    assert seen == ["/v1/things/7"]
    assert app.openapi()["paths"]["/v1/things/{thing_id}"]["get"]["tags"] == ["things"]
