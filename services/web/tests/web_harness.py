"""Run the real api and web services as processes for the web's tests.

``ServiceProcess.start(...)`` launches ``python -c "from <module> import run; run()"`` with
settings in the environment (exactly how a container starts them, minus Dapr), waits for
``/readyz`` and keeps its JSON log in ``artifacts/logs/web-tests/<name>.log``.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from testkit.procs import free_port

ROOT = Path(__file__).resolve().parents[3]
ARTIFACTS = ROOT / "artifacts"
LOGS = ARTIFACTS / "logs" / "web-tests"
SCREENSHOTS = ARTIFACTS / "screenshots"
PASSWORD = secrets.token_urlsafe(16)  # the test accounts' password
CSRF_INPUT = re.compile(r'name="csrf_token" value="([^"]+)"')


@dataclass
class ServiceProcess:
    name: str
    url: str
    process: subprocess.Popen
    log_path: Path

    @classmethod
    def start(cls, name: str, module: str, env: dict[str, str], *, timeout: float = 45.0) -> ServiceProcess:
        port = free_port()
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
        service = cls(name=name, url=f"http://127.0.0.1:{port}", process=process, log_path=log_path)
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

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)


def api_env(database_url: str) -> dict[str, str]:
    """The api against a real PostgreSQL, without Dapr (no outbox relay), with a cheap password hash."""
    return {
        "TODO_DATABASE_URL": database_url,
        "TODO_MIGRATE_ON_START": "true",
        "TODO_OUTBOX_RELAY_ENABLED": "false",
        "TODO_ARGON2_TIME_COST": "1",
        "TODO_ARGON2_MEMORY_KIB": "8192",
        "TODO_ARGON2_PARALLELISM": "1",
    }


def csrf_from(html: str) -> str:
    found = CSRF_INPUT.search(html)
    assert found, "no CSRF token in the page"
    return found.group(1)
