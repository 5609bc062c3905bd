"""The web's pure logic: forms and time zones, problem parsing, filters, redirects, CSRF (rung L0)."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from types import SimpleNamespace

import httpx
import pytest
from fastapi import Response
from fastapi.testclient import TestClient
from starlette.datastructures import QueryParams
from todo_shared.dapr import DaprClient
from todo_shared.settings import SettingsError, load_settings
from todo_web.apiclient import ApiClient, ApiError, ApiUnavailable, field_errors
from todo_web.app import create_app
from todo_web.forms import (
    TaskForm,
    due_state,
    format_minutes,
    format_time,
    local_input_value,
    local_to_api,
    split_tags,
)
from todo_web.pages import Filters, list_context
from todo_web.session import Flash, read_flashes, safe_next, set_session
from todo_web.settings import WebSettings

pytestmark = pytest.mark.unit


# --- times and zones ----------------------------------------------------------------------


def test_local_time_gets_the_browser_zone_with_daylight_saving():
    assert local_to_api("2031-07-01T09:30", "Europe/Berlin") == "2031-07-01T09:30:00+02:00"
    assert local_to_api("2031-01-15T09:30", "Europe/Berlin") == "2031-01-15T09:30:00+01:00"
    assert local_to_api("2031-01-15T09:30", "America/New_York") == "2031-01-15T09:30:00-05:00"


def test_unknown_zone_falls_back_to_utc():
    assert local_to_api("2031-01-15T09:30", "Mars/Olympus") == "2031-01-15T09:30:00+00:00"


def test_malformed_local_time_is_refused():
    with pytest.raises(ValueError, match="tomorrow"):
        local_to_api("tomorrow", "UTC")


def test_api_time_back_into_the_form_in_the_users_zone():
    assert local_input_value("2031-01-15T08:30:00Z", "Asia/Tokyo") == "2031-01-15T17:30"
    assert local_input_value("2031-01-15T08:30:00+00:00", "UTC") == "2031-01-15T08:30"
    assert local_input_value(None, "UTC") == ""


def test_format_time_and_minutes():
    assert format_time("2031-02-03T09:30:00+00:00", "UTC") == "Mon 3 Feb 2031, 09:30"
    assert format_minutes(15) == "15 minutes"
    assert format_minutes(60) == "1 hour"
    assert format_minutes(1440) == "1 day"
    assert format_minutes(2880) == "2 days"
    assert format_minutes(10080) == "1 week"
    assert format_minutes(1) == "1 minute"


@pytest.mark.parametrize(
    ("due", "completed", "expected"),
    [
        ("2031-03-10T08:00:00+00:00", False, "overdue"),
        ("2031-03-10T20:00:00+00:00", False, "today"),
        ("2031-03-11T08:00:00+00:00", False, None),
        ("2031-03-10T08:00:00+00:00", True, None),
        (None, False, None),
    ],
)
def test_due_state(due, completed, expected):
    now = datetime(2031, 3, 10, 12, 0, tzinfo=UTC)
    assert due_state({"due_at": due, "completed": completed}, "UTC", now) == expected


def test_due_today_is_the_users_today():
    now = datetime(2031, 3, 10, 22, 0, tzinfo=UTC)  # already 11 March in Tokyo
    task = {"due_at": "2031-03-11T10:00:00+00:00", "completed": False}  # 19:00 on 11 March in Tokyo
    assert due_state(task, "UTC", now) is None
    assert due_state(task, "Asia/Tokyo", now) == "today"


# --- the task form ------------------------------------------------------------------------


def test_tags_are_split_lowercased_and_deduplicated():
    assert split_tags(" Work, home  errands,work ,, ") == ["work", "home", "errands"]
    assert split_tags("") == []


def test_form_payload_carries_every_field():
    form = TaskForm.from_form(
        {
            "title": "  Pay rent ",
            "description": "By transfer",
            "priority": "high",
            "tags": "Home, money",
            "due_at": "2031-05-01T09:00",
            "tz": "Europe/Paris",
            "remind_before_minutes": "30",
            "recurrence": "monthly",
        },
        default_tz="UTC",
    )
    assert form.payload() == {
        "title": "Pay rent",
        "description": "By transfer",
        "priority": "high",
        "tags": ["home", "money"],
        "due_at": "2031-05-01T09:00:00+02:00",
        "remind_before_minutes": 30,
        "recurrence": "monthly",
    }


def test_form_payload_clears_empty_optional_fields():
    payload = TaskForm.from_form({"title": "x", "tz": ""}, default_tz="UTC").payload()
    assert payload == {
        "title": "x",
        "description": None,
        "priority": "medium",
        "tags": [],
        "due_at": None,
        "remind_before_minutes": None,
        "recurrence": "none",
    }


def test_form_keeps_what_was_typed_when_it_cannot_be_sent():
    form = TaskForm.from_form({"title": "x", "due_at": "soon", "remind_before_minutes": "ten"}, "UTC")
    assert form.payload() is None
    assert set(form.errors) == {"due_at", "remind_before_minutes"}
    assert (form.due_at, form.remind_before_minutes) == ("soon", "ten")


def test_form_from_task_round_trips():
    task = {
        "id": "1",
        "title": "Stand-up",
        "description": None,
        "priority": "low",
        "tags": ["work", "daily"],
        "due_at": "2031-05-01T07:00:00+00:00",
        "remind_before_minutes": 5,
        "recurrence": "daily",
    }
    form = TaskForm.from_task(task, "Europe/Paris")
    assert (form.due_at, form.tags, form.remind_before_minutes) == ("2031-05-01T09:00", "work, daily", "5")
    assert form.payload()["due_at"] == "2031-05-01T09:00:00+02:00"


# --- problems from the api ----------------------------------------------------------------


def test_field_errors_from_the_shared_problem_shape():
    problem = {
        "status": 422,
        "detail": "Invalid",
        "errors": [
            {"loc": ["body", "title"], "field": "title", "message": "too long", "type": "x"},
            {"loc": ["body", "tags", 2], "field": "tags.2", "message": "bad tag", "type": "x"},
        ],
    }
    assert field_errors(problem) == {"title": "Too long", "tags": "Bad tag"}


def test_field_errors_in_other_spellings():
    assert field_errors({"errors": {"email": ["taken"]}}) == {"email": "Taken"}
    assert field_errors({"invalid_params": [{"name": "due_at", "reason": "needed"}]}) == {"due_at": "Needed"}
    assert field_errors({"errors": [{"loc": ["body", "recurrence"], "msg": "Value error, no"}]}) == {
        "recurrence": "No"
    }
    assert field_errors({"detail": "x"}) == {}


def test_api_error_detail_falls_back_to_title_then_status():
    assert ApiError(409, {"detail": "Email taken"}).detail == "Email taken"
    assert ApiError(409, {"title": "Conflict"}).detail == "Conflict"
    assert "409" in ApiError(409, {}).detail


# --- list filters and redirects -----------------------------------------------------------


def test_filters_ignore_unknown_values():
    filters = Filters.from_query(
        QueryParams("status=bogus&priority=urgent&sort=x&order=up&page=-3&due=never")
    )
    assert filters == Filters()


def test_filter_urls_keep_the_rest():
    filters = Filters.from_query(QueryParams("q=milk&status=open&tag=home&page=2"))
    assert filters.url() == "/tasks?q=milk&status=open&tag=home&page=2"
    assert filters.url(tag="work", page=None) == "/tasks?q=milk&status=open&tag=work"
    assert filters.url(tag="", page=None) == "/tasks?q=milk&status=open"
    assert Filters().url() == "/tasks"


def test_filter_api_params():
    params = Filters.from_query(QueryParams("due=today&sort=due&order=asc&page=3")).api_params(
        20, "Asia/Tokyo"
    )
    assert params["offset"] == 40
    assert params["limit"] == 20
    assert (params["due"], params["tz"], params["sort"], params["order"]) == (
        "today",
        "Asia/Tokyo",
        "due",
        "asc",
    )


def test_list_context_pages_and_tag_options():
    body = {"items": [{"id": 1, "title": "a", "tags": ["x"]}], "total": 41}
    context = list_context(Filters(tag="gone"), body, [{"name": "x", "count": 1}], "UTC", 20)
    assert context["pages"] == 3
    assert context["tasks"][0]["id"] == "1"
    assert ("gone", "#gone") in context["tag_options"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("/tasks?q=1", "/tasks?q=1"),
        ("/tasks/abc/edit", "/tasks/abc/edit"),
        ("https://evil.example/", "/tasks"),
        ("//evil.example/", "/tasks"),
        ("/\\evil.example", "/tasks"),
        ("/signin", "/tasks"),
        ("/api/v1/tasks", "/tasks"),
        ("/tasks\r\nSet-Cookie: x", "/tasks"),
        (None, "/tasks"),
    ],
)
def test_safe_next(value, expected):
    assert safe_next(value) == expected


# --- the app without an api: health, CSRF, sign-in redirects, static files ----------------


@pytest.fixture
def client():
    settings = WebSettings(environment="test", api_url="http://127.0.0.1:9")  # nothing listens on port 9
    with TestClient(create_app(settings), follow_redirects=False) as client:
        yield client


def test_health_metrics_and_readiness_without_the_api(client):
    assert client.get("/healthz").json()["status"] == "ok"
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.headers["content-type"].startswith("application/problem+json")
    assert "api" in ready.json()["failed"]
    metrics = client.get("/metrics")
    assert metrics.status_code == 200
    assert "http_requests_total" in metrics.text


def test_pages_need_a_session(client):
    response = client.get("/tasks?q=x")
    assert response.status_code == 303
    assert response.headers["location"] == "/signin?next=%2Ftasks%3Fq%3Dx"
    assert client.get("/").headers["location"] == "/signin"
    assert client.get("/tasks/partial").status_code == 401


def test_signin_page_sets_a_csrf_cookie_and_security_headers(client):
    page = client.get("/signin")
    assert page.status_code == 200
    assert "todo_csrf" in page.cookies
    assert f'value="{page.cookies["todo_csrf"]}"' in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["cache-control"] == "no-store"
    assert page.headers["x-frame-options"] == "DENY"
    cookie = next(h for h in page.headers.get_list("set-cookie") if h.startswith("todo_csrf="))
    assert "HttpOnly" in cookie
    assert "SameSite=lax" in cookie


def test_post_without_the_csrf_token_is_refused(client):
    client.get("/signin")
    response = client.post(
        "/signin", data={"email": "a@example.com", "password": "x" * 10}, headers={"accept": "text/html"}
    )
    assert response.status_code == 403
    assert "This form has expired" in response.text
    wrong = client.post(
        "/signin", data={"email": "a@example.com", "password": "x" * 10, "csrf_token": "y" * 43}
    )
    assert wrong.status_code == 403


def test_api_down_shows_a_friendly_page_and_keeps_the_email(client):
    token = client.get("/signin").cookies["todo_csrf"]
    response = client.post(
        "/signin",
        data={"email": "a@example.com", "password": "long enough", "csrf_token": token},
        headers={"accept": "text/html"},
    )
    assert response.status_code == 503
    assert "did not answer" in response.text
    assert 'value="a@example.com"' in response.text


def test_static_files_are_served_with_cache_headers(client):
    css = client.get("/static/app.css")
    assert css.status_code == 200
    assert css.headers["cache-control"].startswith("public")
    assert client.get("/static/app.js").status_code == 200


def test_unknown_page_is_html_for_browsers_and_a_problem_for_others(client):
    page = client.get("/nope", headers={"accept": "text/html"})
    assert page.status_code == 404
    assert "Page not found" in page.text
    problem = client.get("/nope", headers={"accept": "application/json"})
    assert problem.status_code == 404
    assert problem.headers["content-type"].startswith("application/problem+json")


def test_flash_cookie_is_read_defensively():
    request = SimpleNamespace(cookies={"todo_flash": "%5B%5B%22evil%22%2C%22hi%22%5D%2C%22x%22%5D"})
    assert read_flashes(request) == [Flash("info", "hi")]
    assert read_flashes(SimpleNamespace(cookies={"todo_flash": "not json"})) == []
    assert read_flashes(SimpleNamespace(cookies={"todo_flash": "%7B%7D"})) == []


# --- settings and the way to the api ------------------------------------------------------


def test_the_web_needs_no_jwt_key_but_refuses_placeholder_dapr_tokens(monkeypatch):
    monkeypatch.delenv("TODO_JWT_SIGNING_KEY", raising=False)
    assert load_settings(WebSettings, environment="production").environment == "production"
    monkeypatch.setenv("DAPR_API_TOKEN", "change-me")
    with pytest.raises(SettingsError, match="DAPR_API_TOKEN"):
        load_settings(WebSettings, environment="production")


def test_session_cookie_is_secure_outside_local_runs():
    response = Response()
    set_session(response, "a.b.c", WebSettings(environment="staging"))
    cookie = response.headers["set-cookie"]
    assert "Secure" in cookie
    assert "HttpOnly" in cookie
    assert "SameSite=lax" in cookie
    assert "Path=/" in cookie


def test_without_a_sidecar_the_api_is_called_directly():
    client = ApiClient.from_settings(WebSettings(api_url="http://api.internal:8000/"))
    assert client.dapr is None
    assert str(client.http.base_url) == "http://api.internal:8000"


@pytest.mark.asyncio
async def test_with_a_sidecar_calls_go_through_dapr_service_invocation():
    """A stand-in for the Dapr sidecar's HTTP API (httpx MockTransport) records what the web sends."""
    seen: list[httpx.Request] = []

    def sidecar(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path == "/v1.0/healthz/outbound":
            return httpx.Response(204)
        if request.url.path == "/v1.0/invoke/api/method/healthz":
            return httpx.Response(200, json={"status": "ok"})
        if request.method == "GET" and request.url.path == "/v1.0/invoke/api/method/api/v1/tasks":
            return httpx.Response(200, json={"items": [], "total": 0, "limit": 20, "offset": 0})
        return httpx.Response(
            422,
            json={"status": 422, "detail": "Invalid", "errors": [{"field": "title", "message": "Too long"}]},
            headers={"content-type": "application/problem+json"},
        )

    token = secrets.token_urlsafe(24)
    settings = WebSettings(dapr_http_port=3500, dapr_api_token=token)
    dapr = DaprClient.from_settings(settings, transport=httpx.MockTransport(sidecar))
    client = ApiClient(dapr=dapr, app_id=settings.api_app_id, answered_window=0)  # always probe
    try:
        page = await client.list_tasks("user-jwt", {"status": "open", "q": "", "limit": 20})
        assert page["total"] == 0
        await client.readiness_check()
        with pytest.raises(ApiError) as refused:
            await client.create_task("user-jwt", {"title": "x" * 300})
    finally:
        await client.aclose()
    listed = seen[0]
    assert str(listed.url) == "http://127.0.0.1:3500/v1.0/invoke/api/method/api/v1/tasks?status=open&limit=20"
    assert listed.headers["authorization"] == "Bearer user-jwt"
    assert listed.headers["dapr-api-token"] == token
    assert [r.url.path for r in seen[1:3]] == ["/v1.0/healthz/outbound", "/v1.0/invoke/api/method/healthz"]
    assert refused.value.fields == {"title": "Too long"}


@pytest.mark.asyncio
async def test_a_sidecar_that_answers_5xx_or_nothing_makes_the_api_unavailable():
    def failing(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/tasks"):
            return httpx.Response(500, json={"errorCode": "ERR_DIRECT_INVOKE"})
        raise httpx.ConnectError("refused", request=request)

    client = ApiClient(dapr=DaprClient(3500, transport=httpx.MockTransport(failing)))
    try:
        with pytest.raises(ApiUnavailable):
            await client.list_tasks("t", {})
        with pytest.raises(ApiUnavailable):
            await client.get_task("t", "00000000-0000-0000-0000-000000000000")
    finally:
        await client.aclose()


@pytest.mark.asyncio
async def test_a_read_that_meets_an_unavailable_api_is_sent_once_more_and_a_write_never():
    """The sidecar stand-in fails each path's first call (a 500 from Dapr, then a refused
    connection): the list is read on its second try; the create fails at once, sent once."""
    seen: list[str] = []

    def sidecar(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.method} {request.url.path.rsplit('/', 1)[1]}")
        if seen.count(seen[-1]) > 1:
            return httpx.Response(200, json={"items": [], "total": 0, "limit": 20, "offset": 0})
        if request.method == "GET":
            return httpx.Response(500, json={"errorCode": "ERR_DIRECT_INVOKE"})
        raise httpx.ConnectError("refused", request=request)

    client = ApiClient(dapr=DaprClient(3500, transport=httpx.MockTransport(sidecar)))
    try:
        assert (await client.list_tasks("t", {}))["total"] == 0
        with pytest.raises(ApiUnavailable):
            await client.create_task("t", {"title": "once"})
    finally:
        await client.aclose()
    assert seen == ["GET tasks", "GET tasks", "POST tasks"]


@pytest.mark.asyncio
async def test_a_recent_answer_of_the_api_makes_the_web_ready_without_a_probe_of_its_own():
    """Readiness checks the api only when no call was answered in the window: a slow probe
    under load must not take every web pod out while their pages are being served."""
    seen: list[str] = []

    def sidecar(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        if request.url.path.endswith("/tasks"):
            return httpx.Response(500 if len(seen) > 3 else 200, json={"items": [], "total": 0})
        return httpx.Response(204 if "healthz/outbound" in request.url.path else 200)

    client = ApiClient(dapr=DaprClient(3500, transport=httpx.MockTransport(sidecar)), answered_window=60)
    try:
        await client.readiness_check()  # nothing answered yet: probes the sidecar and the api
        assert seen == ["/v1.0/healthz/outbound", "/v1.0/invoke/api/method/healthz"]
        await client.list_tasks("t", {})
        await client.readiness_check()  # the list was answered: no probe
        assert len(seen) == 3
        client.answered_at -= 61  # the answer is older than the window
        with pytest.raises(ApiUnavailable):
            await client.list_tasks("t", {})  # answered 500 twice: no proof of life
        await client.readiness_check()
        assert seen[-2:] == ["/v1.0/healthz/outbound", "/v1.0/invoke/api/method/healthz"]
    finally:
        await client.aclose()
