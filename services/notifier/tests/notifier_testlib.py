"""Helpers shared by the notifier tests (imported by conftest.py and the test modules)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from todo_notifier.settings import NotifierSettings
from todo_shared.auth import issue_token
from todo_shared.dapr import CLOUDEVENTS_JSON, cloud_event
from todo_shared.problems import PROBLEM_JSON

ROOT = Path(__file__).resolve().parents[3]
LOGS = ROOT / "artifacts" / "logs" / "notifier-tests"
JWT_KEY = secrets.token_urlsafe(40)


def make_settings(dsn: str, **overrides: Any) -> NotifierSettings:
    values = {
        "environment": "test",
        "database_url": dsn,
        "jwt_signing_key": JWT_KEY,
        "outbox_poll_interval_seconds": 0.05,
        "outbox_backoff_base_seconds": 0.05,
        "outbox_backoff_max_seconds": 0.2,
        "outbox_metrics_interval_seconds": 0.05,
        "job_retry_interval_seconds": 0.5,
        "db_pool_size": 5,
        **overrides,
    }
    return NotifierSettings(**values)


@asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """Run the app's lifespan and give an in-process HTTP client for it."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://notifier.test") as client:
            yield client


@dataclass
class User:
    id: uuid.UUID
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def new_user(settings: NotifierSettings | None = None) -> User:
    """A signed-in user as the api would issue it (same JWT key: the notifier trusts it)."""
    settings = settings or make_settings("postgresql://unused/db")
    user_id = uuid.uuid4()
    return User(user_id, issue_token(settings, user_id, f"{user_id.hex[:8]}@example.com"))


def assert_problem(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON, response.headers
    body = response.json()
    assert body["status"] == status
    assert body["title"]
    return body


# -- task events shaped exactly like the api's (todo_api.outbox.event_payload) ------------------


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


@dataclass
class Task:
    """A task as the api shows it (TaskOut), with helpers to make its events."""

    user_id: uuid.UUID
    title: str = "Pay rent"
    due_at: datetime | None = None
    remind_before_minutes: int | None = None
    completed: bool = False
    id: uuid.UUID = field(default_factory=uuid.uuid4)
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    updated_at: datetime | None = None

    def __post_init__(self) -> None:
        self.updated_at = self.updated_at or self.created_at

    def snapshot(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "title": self.title,
            "description": None,
            "priority": "medium",
            "tags": [],
            "due_at": iso(self.due_at),
            "remind_before_minutes": self.remind_before_minutes,
            "recurrence": "none",
            "completed": self.completed,
            "completed_at": iso(self.updated_at) if self.completed else None,
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
            "series_id": str(self.id),
            "next_task_id": None,
        }

    def change(self, **fields: Any) -> Task:
        """The task after an update (updated_at moves forward, as the api's now() does)."""
        for name, value in fields.items():
            setattr(self, name, value)
        self.updated_at = max(datetime.now(UTC), self.updated_at + timedelta(microseconds=1))  # type: ignore[operator]
        return self

    def event(self, event_type: str, *, event_id: uuid.UUID | None = None) -> dict[str, Any]:
        """The CloudEvent the api publishes for this task's current state."""
        event_id = event_id or uuid.uuid4()
        occurred = datetime.now(UTC) if event_type == "task.deleted" else self.updated_at
        data = {
            "event_id": str(event_id),
            "type": event_type,
            "user_id": str(self.user_id),
            "task_id": str(self.id),
            "occurred_at": iso(occurred),
            "task": self.snapshot(),
        }
        return cloud_event(str(event_id), event_type, "todo-api", data, subject=str(self.id), time=occurred)


def reminder_task(user_id: uuid.UUID, seconds: float, **fields: Any) -> Task:
    """A task whose reminder (1 minute before due) fires ``seconds`` from now."""
    due = datetime.now(UTC) + timedelta(minutes=1, seconds=seconds)
    return Task(user_id=user_id, due_at=due, remind_before_minutes=1, **fields)


async def deliver_as_dapr(client: httpx.AsyncClient, event: dict[str, Any], token: str | None = None) -> str:
    """POST an event to the subscription route the way daprd does; the status answered."""
    headers = {"content-type": CLOUDEVENTS_JSON}
    if token:
        headers["dapr-api-token"] = token
    response = await client.post("/dapr/events/task-events", content=json.dumps(event), headers=headers)
    assert response.status_code == 200, response.text
    return response.json()["status"]


async def wait_until(
    predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.1, what: str = ""
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met in {timeout}s: {what}")
        await asyncio.sleep(interval)


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in a Prometheus text exposition (0 when absent)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        series, _, value = line.rpartition(" ")
        if series == name and not labels:
            return float(value)
        if series.startswith(name + "{"):
            found = ",".join(sorted(series[len(name) + 1 : -1].split(",")))
            if found == wanted:
                return float(value)
    return 0.0


# -- the notifier as a real process (its console script) ----------------------------------------


@dataclass
class NotifierProcess:
    """``todo-notifier`` (the console script a container runs) with settings in its environment."""

    name: str
    port: int
    env: dict[str, str]
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return LOGS / f"{self.name}.log"

    def start(self, timeout: float = 45.0, *, wait: bool = True) -> NotifierProcess:
        LOGS.mkdir(parents=True, exist_ok=True)
        environment = {
            k: v for k, v in os.environ.items() if not k.startswith(("TODO_", "DAPR_", "APP_API_"))
        }
        environment.update(
            {
                "TODO_ENVIRONMENT": "test",
                "TODO_HOST": "127.0.0.1",
                "TODO_PORT": str(self.port),
                "TODO_JWT_SIGNING_KEY": JWT_KEY,
                "PYTHONUNBUFFERED": "1",
            }
        )
        environment.update(self.env)
        script = Path(sys.executable).with_name("todo-notifier")
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [str(script)],
                env=environment,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                start_new_session=True,
            )
        if wait:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                response = httpx.get(f"{self.url}/readyz", timeout=2.0)
                if response.status_code == 200:
                    return
                last = f"{response.status_code} {response.text[:300]}"
            except httpx.HTTPError as exc:
                last = repr(exc)
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.name} not ready after {timeout}s ({last}):\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def log_records(self) -> list[dict[str, Any]]:
        records = []
        with contextlib.suppress(OSError):
            for line in self.log_path.read_text(errors="replace").splitlines():
                with contextlib.suppress(ValueError):
                    records.append(json.loads(line))
        return records

    def stop(self) -> int | None:
        """SIGTERM (graceful: drain, stop the relay), SIGKILL after 15 s; the exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)
        code = self.process.returncode
        self.process = None
        return code

    def metrics(self) -> str:
        return httpx.get(f"{self.url}/metrics", timeout=5).text


# -- real Dapr: one test's topics, sidecars and notifier replicas ---------------------------------


@dataclass
class DaprSlice:
    """One test's share of the session's Dapr (``dapr`` fixture): its own topics, tokens and
    notifier database; replicas (in-process or processes) each with their own daprd, all with
    the app id ``notifier`` (the components are scoped to it). Jobs of the tasks in
    ``tasks`` are deleted at the end so they cannot fire into a later test."""

    dapr: Any  # testkit.dapr.DaprEnv
    dsn: str
    name: str
    api_token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    app_token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    tasks: list[uuid.UUID] = field(default_factory=list)
    sidecars: list[Any] = field(default_factory=list)
    servers: list[Any] = field(default_factory=list)
    processes: list[NotifierProcess] = field(default_factory=list)

    def __post_init__(self) -> None:
        suffix = uuid.uuid4().hex[:8]
        self.topic = f"task-events-{suffix}"
        self.dead_letter = f"task-events-dead-letter-{suffix}"
        self.reminders = f"reminders-{suffix}"
        self.dapr.topics(self.topic, self.dead_letter, self.reminders, partitions=3)

    def overrides(self, sidecar: Any) -> dict[str, Any]:
        return {
            "dapr_http_port": sidecar.http_port,
            "dapr_api_token": self.api_token,
            "app_api_token": self.app_token,
            "task_events_topic": self.topic,
            "task_events_dead_letter_topic": self.dead_letter,
            "reminders_topic": self.reminders,
        }

    def sidecar(self, app_port: int, app_id: str = "notifier") -> Any:
        sidecar = self.dapr.sidecar(app_id, app_port, api_token=self.api_token, app_token=self.app_token)
        self.sidecars.append(sidecar)
        return sidecar

    def in_process(self, **overrides: Any) -> tuple[Any, Any]:
        """A notifier app in a thread (real uvicorn) next to its own daprd: (server, sidecar)."""
        from todo_notifier.app import create_notifier_app
        from todo_shared.testing import ServerThread

        from testkit.procs import free_port

        port = free_port()
        sidecar = self.sidecar(port)
        settings = make_settings(self.dsn, **{**self.overrides(sidecar), **overrides})
        server = ServerThread(create_notifier_app(settings), port=port).start()
        self.servers.append(server)
        sidecar.wait_ready()
        return server, sidecar

    def process(self, name: str, **env: str) -> tuple[NotifierProcess, Any]:
        """``todo-notifier`` as a process next to its own daprd: (process, sidecar)."""
        [started] = self.replicas(name, **env)
        return started

    def replicas(self, *names: str, **env: str) -> list[tuple[NotifierProcess, Any]]:
        """Several replicas started at once (each process with its own daprd)."""
        from testkit.procs import free_port

        started = []
        for name in names:
            port = free_port()
            sidecar = self.sidecar(port)
            values = {
                "TODO_DATABASE_URL": self.dsn,
                "TODO_TASK_EVENTS_TOPIC": self.topic,
                "TODO_TASK_EVENTS_DEAD_LETTER_TOPIC": self.dead_letter,
                "TODO_REMINDERS_TOPIC": self.reminders,
                "TODO_JOB_RETRY_INTERVAL_SECONDS": "0.5",
                "TODO_OUTBOX_POLL_INTERVAL_SECONDS": "0.1",
                "TODO_LOG_LEVEL": "INFO",
                **sidecar.env(),
                **env,
            }
            process = NotifierProcess(f"{self.name}-{name}", port, values)
            if process.log_path.exists():
                process.log_path.unlink()
            self.processes.append(process)
            process.start(wait=False)
            started.append((process, sidecar))
        for process, sidecar in started:
            process.wait_ready(45)
            sidecar.wait_ready()
        return started

    def api(self, sidecar: Any | None = None) -> Any:
        """The Dapr state and Jobs API of the app id ``notifier`` through one of its sidecars."""
        from todo_notifier.sidecar import SidecarApi

        sidecar = sidecar or next(s for s in self.sidecars if s.process and s.process.running)
        return SidecarApi(sidecar.http_port, store="statestore", api_token=self.api_token)

    def track(self, task: Task) -> Task:
        self.tasks.append(task.id)
        return task

    async def close(self) -> None:
        from todo_notifier.reminders import job_name

        running = [s for s in self.sidecars if s.app_id == "notifier" and s.process and s.process.running]
        if running and self.tasks:
            api = self.api(running[0])
            try:
                for task_id in self.tasks:
                    with contextlib.suppress(Exception):
                        await api.delete_job(job_name(task_id))
            finally:
                await api.aclose()
        for process in self.processes:
            process.stop()
        for server in self.servers:
            server.stop()
        for sidecar in self.sidecars:
            sidecar.stop()


def read_topic(
    kafka: Any, topic: str, *, count: int, timeout: float, linger: float = 0.0
) -> list[dict[str, Any]]:
    """Messages of ``topic`` from the start (a fresh consumer group): ``{"key", "partition",
    "value"}`` each; waits until ``count`` arrived (or ``timeout``), then ``linger`` seconds
    more for any extra (a duplicate would show up then)."""
    from confluent_kafka import Consumer

    consumer = Consumer(
        kafka.client_config(
            **{
                "group.id": f"t-{uuid.uuid4().hex[:8]}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            }
        )
    )
    consumer.subscribe([topic])
    messages: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    linger_until = None
    try:
        while True:
            now = time.monotonic()
            if len(messages) >= count and linger_until is None:
                linger_until = now + linger
            if (linger_until is not None and now >= linger_until) or now >= deadline:
                return messages
            message = consumer.poll(0.2)
            if message is None or message.error():
                continue
            messages.append(
                {
                    "key": message.key().decode() if message.key() else None,
                    "partition": message.partition(),
                    "value": json.loads(message.value()),
                }
            )
    finally:
        consumer.close()


async def query(dsn: str, sql: str, **params: Any) -> list[Any]:
    """Rows of one query on a notifier database (its own short-lived engine)."""
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine
    from todo_notifier.db import async_url

    engine = create_async_engine(async_url(dsn))
    try:
        async with engine.connect() as conn:
            return (await conn.execute(text(sql), params)).all()
    finally:
        await engine.dispose()
