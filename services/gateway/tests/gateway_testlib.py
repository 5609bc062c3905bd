"""Helpers for the gateway's tests: a real SSE client (httpx streaming), tokens, deliveries
shaped like the api's and the notifier's events, and the gateway as a real process."""

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
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from todo_shared.auth import issue_token
from todo_shared.settings import ServiceSettings

from testkit.procs import free_port

ROOT = Path(__file__).resolve().parents[3]
LOGS = ROOT / "artifacts" / "logs" / "gateway-tests"
JWT_KEY = "gateway-tests-jwt-signing-key-0123456789abcdef"
APP_TOKEN = secrets.token_hex(16)  # what the sidecar presents to the gateway


def token_for(user_id: uuid.UUID, key: str = JWT_KEY) -> str:
    settings = ServiceSettings(environment="test", jwt_signing_key=key)
    return issue_token(settings, user_id, f"{user_id.hex[:8]}@example.com")


def task_event(
    user_id: uuid.UUID, event_type: str = "task.updated", *, title: str = "Buy milk", description: str = ""
) -> dict[str, Any]:
    """The api's outbox payload (todo_api.outbox.event_payload) for a task of ``user_id``."""
    now = datetime.now(UTC).isoformat()
    task_id = str(uuid.uuid4())
    return {
        "event_id": str(uuid.uuid4()),
        "type": event_type,
        "user_id": str(user_id),
        "task_id": task_id,
        "occurred_at": now,
        "task": {"id": task_id, "title": title, "description": description or None, "priority": "medium"},
    }


def reminder_event(user_id: uuid.UUID, message: str = "“Pay rent” is due soon") -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "type": "reminder.due",
        "user_id": str(user_id),
        "task_id": str(uuid.uuid4()),
        "notification": {"id": str(uuid.uuid4()), "message": message},
    }


def cloud_event(data: dict[str, Any], topic: str = "task-events") -> dict[str, Any]:
    """A CloudEvent as daprd delivers it to a subscriber: the publisher's envelope plus its fields."""
    return {
        "specversion": "1.0",
        "id": data["event_id"],
        "source": "todo-api",
        "type": data["type"],
        "time": datetime.now(UTC).isoformat(),
        "datacontenttype": "application/json",
        "data": data,
        "topic": topic,
        "pubsubname": "pubsub-fanout",
    }


@dataclass
class Frame:
    """What came between two blank lines: an event, or only comments / a retry hint."""

    id: str | None = None
    event: str | None = None
    data_lines: list[str] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)
    retry: int | None = None

    @property
    def data(self) -> str:
        return "\n".join(self.data_lines)

    def json(self) -> Any:
        return json.loads(self.data)

    @property
    def is_event(self) -> bool:
        return bool(self.data_lines)


class SseStream:
    """A real SSE client on an httpx streaming response; frames are read in the background."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.frames: asyncio.Queue[Frame | None] = asyncio.Queue()
        self.ended = asyncio.Event()
        self.error: BaseException | None = None
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        frame = Frame()
        try:
            async for raw in self.response.aiter_lines():
                line = raw.rstrip("\r\n")
                if not line:
                    await self.frames.put(frame)
                    frame = Frame()
                    continue
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if name == "":
                    frame.comments.append(value)
                elif name == "id":
                    frame.id = value
                elif name == "event":
                    frame.event = value
                elif name == "data":
                    frame.data_lines.append(value)
                elif name == "retry":
                    frame.retry = int(value)
        except (httpx.HTTPError, asyncio.CancelledError) as exc:
            self.error = exc
        finally:
            self.ended.set()
            self.frames.put_nowait(None)

    async def next_frame(self, timeout: float = 5.0) -> Frame:
        frame = await asyncio.wait_for(self.frames.get(), timeout)
        if frame is None:
            raise EOFError(f"stream ended ({self.error!r})")
        return frame

    async def next_event(self, timeout: float = 5.0) -> Frame:
        """The next frame carrying data (skips heartbeats and the preamble)."""
        deadline = time.monotonic() + timeout
        while True:
            frame = await self.next_frame(max(0.01, deadline - time.monotonic()))
            if frame.is_event:
                return frame

    async def events(self, count: int, timeout: float = 10.0) -> list[Frame]:
        deadline = time.monotonic() + timeout
        return [await self.next_event(max(0.01, deadline - time.monotonic())) for _ in range(count)]

    async def expect_no_event(self, within: float) -> None:
        with contextlib.suppress(TimeoutError):
            frame = await self.next_event(within)
            raise AssertionError(f"unexpected event {frame.event} {frame.id}: {frame.data[:200]}")

    async def wait_ended(self, timeout: float = 5.0) -> None:
        await asyncio.wait_for(self.ended.wait(), timeout)

    async def aclose(self) -> None:
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        await self.response.aclose()


@contextlib.asynccontextmanager
async def sse(
    client: httpx.AsyncClient,
    url: str,
    *,
    token: str | None = None,
    cookie: str | None = None,
    last_event_id: str | None = None,
):
    headers = {"Accept": "text/event-stream"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if cookie:
        headers["Cookie"] = f"todo_session={cookie}"
    if last_event_id:
        headers["Last-Event-ID"] = last_event_id
    request = client.build_request("GET", url, headers=headers)
    response = await client.send(request, stream=True)
    if response.status_code != 200:
        await response.aread()
        await response.aclose()
        raise AssertionError(f"stream refused: {response.status_code} {response.text[:300]}")
    stream = SseStream(response)
    try:
        yield stream
    finally:
        await stream.aclose()


@dataclass
class ServiceProcess:
    """A Todo service as a real process (``python -c "from <module> import run; run()"``, as its
    container starts it), settings in the environment, JSON log in artifacts/logs/gateway-tests/."""

    name: str
    url: str
    port: int
    process: subprocess.Popen
    log_path: Path

    @classmethod
    def start(
        cls,
        name: str,
        env: dict[str, str],
        *,
        module: str = "todo_gateway.main",
        port: int | None = None,
        timeout: float = 45.0,
    ) -> ServiceProcess:
        port = port or free_port()
        LOGS.mkdir(parents=True, exist_ok=True)
        log_path = LOGS / f"{name}.log"
        environment = {
            k: v for k, v in os.environ.items() if not k.startswith(("TODO_", "DAPR_", "APP_API_"))
        }
        environment.update(
            {
                "TODO_ENVIRONMENT": "test",
                "TODO_HOST": "127.0.0.1",
                "TODO_PORT": str(port),
                "TODO_JWT_SIGNING_KEY": JWT_KEY,
                "PYTHONUNBUFFERED": "1",
            }
        )
        environment.update(env)
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-c", f"from {module} import run; run()"],
                env=environment,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                start_new_session=True,
            )
        service = cls(
            name=name, url=f"http://127.0.0.1:{port}", port=port, process=process, log_path=log_path
        )
        service.wait_ready(timeout)
        return service

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
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

    def stop(self, timeout: float = 15) -> int | None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)
        return self.process.returncode
