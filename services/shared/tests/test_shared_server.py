"""Graceful shutdown of a real service process started with ``todo_shared.server.run``
and a chunked request body cut off by a real uvicorn (rung L1: real processes, signals, sockets)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import uvicorn
from test_shared_app import build_app
from todo_shared.app import create_app, is_shutting_down
from todo_shared.problems import PROBLEM_JSON
from todo_shared.server import GracefulServer, uvicorn_config
from todo_shared.settings import ServiceSettings
from todo_shared.testing import ServerThread

from testkit.procs import free_port

SERVICE = """
import asyncio, logging
from contextlib import asynccontextmanager
from fastapi import APIRouter
from todo_shared import ServiceSettings, create_app, load_settings, run

router = APIRouter()

@router.get("/slow")
async def slow() -> dict:
    await asyncio.sleep(1.5)
    return {"done": True}

@asynccontextmanager
async def lifespan(app):
    logging.getLogger("svc").info("lifespan started")
    yield
    logging.getLogger("svc").info("lifespan shutdown ran")

run(lambda: create_app(load_settings(ServiceSettings), lifespan=lifespan, routers=[router]))
"""


def start(tmp_path: Path, **env: str) -> tuple[subprocess.Popen, int]:
    script = tmp_path / "service.py"
    script.write_text(SERVICE)
    port = free_port()
    environ = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TODO_")},
        "TODO_HOST": "127.0.0.1",
        "TODO_PORT": str(port),
        "TODO_ENVIRONMENT": "test",
        "TODO_SERVICE_NAME": "svc",
        **env,
    }
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return proc, port


def wait_healthy(proc: subprocess.Popen, port: int) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read()
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.05)
    raise TimeoutError("service did not start")


@pytest.mark.integration
def test_sigterm_drains_in_flight_requests_then_runs_lifespan_shutdown(tmp_path):
    proc, port = start(tmp_path)
    try:
        wait_healthy(proc, port)
        result: dict = {}

        def slow_request() -> None:
            result["response"] = httpx.get(f"http://127.0.0.1:{port}/slow", timeout=10)

        thread = threading.Thread(target=slow_request)
        thread.start()
        time.sleep(0.4)  # the request is in flight
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        with pytest.raises(httpx.TransportError):  # no longer accepting connections
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
        thread.join(10)
        assert result["response"].status_code == 200
        assert result["response"].json() == {"done": True}
        returncode = proc.wait(15)
    finally:
        if proc.poll() is None:
            proc.kill()
    output = proc.stdout.read()
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    messages = [line["message"] for line in lines]
    assert "stop signal received; draining" in messages
    assert messages.index("lifespan shutdown ran") > messages.index("stop signal received; draining")
    assert all(line["service"] == "svc" for line in lines if line["logger"] != "todo.server")
    assert returncode in (0, -signal.SIGTERM)


@pytest.mark.integration
def test_invalid_settings_exit_2_with_a_clear_message_and_no_value(tmp_path):
    proc, _ = start(tmp_path, TODO_ENVIRONMENT="production", TODO_JWT_SIGNING_KEY="my-short-key")
    assert proc.wait(20) == 2
    output = proc.stdout.read()
    assert "TODO_JWT_SIGNING_KEY is shorter than 32 characters" in output
    assert "my-short-key" not in output


@pytest.mark.unit
def test_the_stop_signal_flips_readiness_before_draining():
    app = create_app(ServiceSettings(environment="test"))
    server = GracefulServer(uvicorn_config(app, ServiceSettings(environment="test")), app)
    assert isinstance(server, uvicorn.Server)
    assert not is_shutting_down(app)
    server.handle_exit(signal.SIGTERM, None)
    assert is_shutting_down(app)
    assert server.should_exit
    assert server.config.timeout_graceful_shutdown == 20.0


@pytest.mark.integration
def test_chunked_body_over_the_limit_is_cut_off_by_a_real_server():
    """No Content-Length: the limit is enforced while the body streams in (real uvicorn)."""

    def chunks():
        for _ in range(10):
            yield b"x" * 500

    with ServerThread(build_app(max_body_bytes=1024)) as server:
        response = httpx.post(
            f"{server.url}/items", content=chunks(), headers={"content-type": "application/json"}
        )
        assert response.status_code == 413
        assert response.headers["content-type"] == PROBLEM_JSON
        assert json.loads(response.text)["status"] == 413
        ok = httpx.post(f"{server.url}/items", json={"name": "a", "size": 1})
        assert ok.status_code == 201


@pytest.mark.unit
def test_production_config_names_uvloop_and_httptools():
    """Named, not "auto": a missing uvloop/httptools would otherwise silently halve throughput."""
    config = uvicorn_config(
        create_app(ServiceSettings(environment="test")), ServiceSettings(environment="test")
    )
    assert (config.loop, config.http) == ("uvloop", "httptools")
    config.load()
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    assert config.http_protocol_class is HttpToolsProtocol
