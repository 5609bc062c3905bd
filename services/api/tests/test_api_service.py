"""The api as a service: the real `todo-api` process (migrate on start, Dapr sidecar stand-in,
graceful shutdown on SIGTERM), settings refused outside local, readiness, metrics by route
template, and logs without secrets (rung L1: real processes, sockets and PostgreSQL)."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import time
import uuid

import httpx
import pytest
from api_testlib import PASSWORD, assert_problem, make_settings, register, running
from sqlalchemy import text
from todo_api.app import create_api_app
from todo_api.db import create_engine, database_check
from todo_api.settings import ApiSettings
from todo_shared.auth import issue_token
from todo_shared.logs import JsonFormatter
from todo_shared.settings import SettingsError, load_settings

from testkit.procs import free_port

COMMAND = [sys.executable, "-c", "from todo_api.main import run; run()"]


def service_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TODO_", "DAPR_", "APP_API"))}
    env.update(extra)
    return env


@pytest.mark.integration
def test_the_service_process_migrates_serves_publishes_and_stops_gracefully(postgres, database, sidecar):
    port = free_port()
    env = service_env(
        TODO_ENVIRONMENT="test",
        TODO_HOST="127.0.0.1",
        TODO_PORT=str(port),
        TODO_DATABASE_URL=database,
        TODO_MIGRATE_ON_START="true",
        TODO_ARGON2_MEMORY_KIB="1024",
        DAPR_HTTP_PORT=str(sidecar.port),
    )
    proc = subprocess.Popen(COMMAND, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                ready = httpx.get(f"{base}/readyz", timeout=2)
                if ready.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "not ready in time"
            time.sleep(0.1)
        assert ready.json()["checks"] == {"database": "ok", "dapr": "ok"}

        email = "proc@example.com"
        assert (
            httpx.post(
                f"{base}/api/v1/auth/register", json={"email": email, "password": PASSWORD}
            ).status_code
            == 201
        )
        login = httpx.post(f"{base}/api/v1/auth/login", json={"email": email, "password": PASSWORD})
        token = login.json()["access_token"]
        created = httpx.post(
            f"{base}/api/v1/tasks",
            json={"title": "from a process"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert created.status_code == 201
        [message] = sidecar.wait_for(1, timeout=10)
        assert message.data["subject"] == created.json()["id"]

        proc.send_signal(signal.SIGTERM)
        returncode = proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = proc.stdout.read()
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    assert len(lines) == len(output.splitlines()), "every line is JSON"
    messages = [line["message"] for line in lines]
    for expected in (
        "outbox relay started",
        "stop signal received; draining",
        "outbox relay stopped",
        "stopped",
    ):
        assert expected in messages, expected
    assert messages.index("outbox relay stopped") > messages.index("stop signal received; draining")
    assert returncode in (0, -signal.SIGTERM)
    for secret in (token, PASSWORD, database):
        assert secret not in output


@pytest.mark.integration
def test_the_service_refuses_a_weak_jwt_key_outside_local():
    """`todo-api` exits 2 naming the variable, never its value (the other cases: test_api_settings_*)."""
    key = "change-me-please-change-me-please-123"
    env = service_env(TODO_ENVIRONMENT="production", TODO_JWT_SIGNING_KEY=key)
    done = subprocess.run(COMMAND, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert "TODO_JWT_SIGNING_KEY is a placeholder" in done.stdout
    assert key not in done.stdout + done.stderr


@pytest.mark.unit
def test_api_settings_from_the_environment(monkeypatch):
    monkeypatch.setenv("TODO_ENVIRONMENT", "staging")
    monkeypatch.setenv("TODO_JWT_SIGNING_KEY", secrets.token_urlsafe(32))
    monkeypatch.setenv("TODO_DATABASE_URL", "postgresql://app:pw@db:5432/todo?sslmode=require")
    monkeypatch.setenv("TODO_PUBSUB_NAME", "kafka-pubsub")
    monkeypatch.setenv("TODO_MIGRATE_ON_START", "true")
    monkeypatch.setenv("DAPR_HTTP_PORT", "3500")
    settings = load_settings(ApiSettings)
    assert settings.pubsub_name == "kafka-pubsub"
    assert settings.task_events_topic == "task-events"
    assert settings.migrate_on_start is True
    assert settings.dapr_http_port == 3500
    assert "pw@" not in repr(settings)
    monkeypatch.setenv("TODO_JWT_SIGNING_KEY", "short")
    with pytest.raises(SettingsError, match="shorter than 32"):
        load_settings(ApiSettings)
    monkeypatch.delenv("TODO_JWT_SIGNING_KEY")  # the built-in local key is a placeholder
    with pytest.raises(SettingsError, match="placeholder"):
        load_settings(ApiSettings)
    monkeypatch.setenv("TODO_ENVIRONMENT", "local")
    assert load_settings(ApiSettings).is_local


@pytest.mark.unit
def test_dsns_get_the_asyncpg_driver_and_ssl():
    from todo_api.db import async_url

    assert async_url("postgresql://u:p@h:5432/d") == "postgresql+asyncpg://u:p@h:5432/d"
    assert async_url("postgres://u@h/d?sslmode=require") == "postgresql+asyncpg://u@h/d?ssl=require"
    assert async_url("postgresql+asyncpg://u@h/d") == "postgresql+asyncpg://u@h/d"


@pytest.mark.integration
async def test_metrics_label_routes_by_template_never_by_id(client, alice):
    task = (await client.post("/api/v1/tasks", json={"title": "t"}, headers=alice.headers)).json()
    await client.get(f"/api/v1/tasks/{task['id']}", headers=alice.headers)
    await client.post(f"/api/v1/tasks/{task['id']}/complete", headers=alice.headers)
    await client.get("/api/v1/tasks/00000000-0000-0000-0000-000000000000", headers=alice.headers)
    text = (await client.get("/metrics")).text
    assert task["id"] not in text
    assert "00000000-0000" not in text
    assert 'http_requests_total{method="GET",route="/api/v1/tasks/{task_id}",status="200"} 1.0' in text
    assert 'http_requests_total{method="GET",route="/api/v1/tasks/{task_id}",status="404"} 1.0' in text
    assert 'route="/api/v1/tasks/{task_id}/complete"' in text
    assert "outbox_backlog_events" in text
    assert "outbox_oldest_pending_age_seconds" in text


@pytest.mark.integration
async def test_readiness_names_the_database_when_it_is_down():
    port = free_port()  # nothing listens there
    app = create_api_app(make_settings(f"postgresql://todo@127.0.0.1:{port}/none", db_pool_timeout_seconds=2))
    async with running(app) as client:
        body = assert_problem(await client.get("/readyz"), 503)
        assert body["failed"] == ["database"]
        assert (await client.get("/healthz")).status_code == 200
        token = issue_token(app.state.settings, uuid.uuid4(), "x@example.com")
        tasks = await client.get("/api/v1/tasks", headers={"Authorization": f"Bearer {token}"})
        problem = assert_problem(tasks, 503)
        assert problem["type"] == "urn:todo:problem:unavailable"
        assert str(port) not in tasks.text


@pytest.mark.integration
async def test_a_database_busy_with_the_requests_queries_keeps_the_api_ready(api_db):
    """The probe's SELECT 1 waits behind the requests for a pooled connection; a statement the
    database answered within the window stands in for it. Past the window the probe waits."""
    engine = create_engine(make_settings(api_db, db_pool_size=1, db_max_overflow=0))
    try:
        recent, strict = database_check(engine), database_check(engine, answered_window=0.2)
        async with engine.connect() as busy:  # the pool's one connection, held by a "request"
            await busy.execute(text("SELECT 1"))
            await asyncio.wait_for(recent(), 1)
            await asyncio.sleep(0.3)
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(strict(), 1)
        await asyncio.wait_for(strict(), 5)  # the connection is back: the probe's own query passes
    finally:
        await engine.dispose()


@pytest.mark.integration
async def test_readiness_names_the_sidecar_when_it_is_unhealthy(api_db, sidecar):
    app = create_api_app(make_settings(api_db, dapr_http_port=sidecar.port))
    async with running(app) as client:
        assert (await client.get("/readyz")).status_code == 200
        sidecar.set_healthy(False)
        body = assert_problem(await client.get("/readyz"), 503)
        assert body["failed"] == ["dapr"]
        assert body["checks"]["database"] == "ok"


@pytest.mark.integration
async def test_logs_are_json_with_request_ids_and_no_secrets(api_db):
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("api"))
    root = logging.getLogger()
    root.addHandler(handler)
    previous = root.level
    root.setLevel(logging.DEBUG)
    try:
        app = create_api_app(make_settings(api_db))
        async with running(app) as client:
            user = await register(client, "logs@example.com")
            await client.post(
                "/api/v1/tasks",
                json={"title": "t"},
                headers={**user.headers, "X-Request-ID": "trace-123"},
            )
            await client.post(
                "/api/v1/auth/login", json={"email": "logs@example.com", "password": "wrong-password"}
            )
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)
    output = stream.getvalue()
    entries = [json.loads(line) for line in output.splitlines()]
    assert any(e.get("request_id") == "trace-123" and e.get("route") == "/api/v1/tasks" for e in entries)
    for secret in (PASSWORD, user.token, "wrong-password", api_db):
        assert secret not in output
