"""The service images run (podman + runc, the container runtime of rung L3 without kubelet),
hardened like a restricted pod: read-only root filesystem with no writable /tmp, numeric
non-root user, no capabilities. Each answers /healthz, and on SIGTERM drains and exits within
the grace period. The api and the notifier migrate and serve a real PostgreSQL from the image.
"""

from __future__ import annotations

import threading
import time
import uuid

import httpx
import pytest
from image_testlib import build_script

# The first test to ask for `images` builds them: minutes on a fresh machine.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]

# Kubernetes' default terminationGracePeriodSeconds; the services' own drain timeout is 20 s.
GRACE_SECONDS = 30
# SIGTERM handled by uvicorn, which re-raises it after the drain: as PID 1 the re-raised signal
# is ignored (no default action for a namespace's init) and the process returns 0; under an
# init process it would end with 128 + 15.
CLEAN_EXIT = {0, 143}


def _messages(container) -> list[str]:
    return [record.get("message", "") for record in container.log_records()]


@pytest.mark.parametrize("service", build_script.SERVICES)
def test_starts_read_only_as_non_root_answers_healthz_and_stops_on_sigterm(service, start_container):
    container = start_container(service)
    startup = container.wait_status("/healthz", 200, timeout=60)
    assert container.pid1_uids() == [build_script.UID] * 4  # real, effective, saved, filesystem
    exit_code, stopped_in = container.terminate(GRACE_SECONDS)
    print(f"{service}: /healthz 200 after {startup:.1f}s; SIGTERM -> exit {exit_code} in {stopped_in:.1f}s")
    assert exit_code in CLEAN_EXIT, container.logs()
    assert stopped_in < GRACE_SECONDS
    messages = _messages(container)
    assert "stop signal received; draining" in messages
    assert messages[-1] == "exited"
    assert "Traceback" not in container.logs()


@pytest.mark.parametrize("service", ["api", "notifier"])
def test_migrates_then_serves_a_real_database(service, start_container, database):
    env = {"TODO_DATABASE_URL": database}
    migrate = start_container(service, env=env, host_network=True, command=("migrate",))
    exit_code, took = migrate.wait_exit(timeout=120)
    assert exit_code == 0, migrate.logs()
    assert "database at revision head" in _messages(migrate)
    server = start_container(service, env=env, host_network=True)
    server.wait_status("/readyz", 200, timeout=60)  # the database check passes from the image
    if service == "api":
        # argon2 (cffi), asyncpg and uvloop: compiled extensions, stripped in the build stage
        email = f"image-{uuid.uuid4().hex[:8]}@example.com"
        password = f"a long passphrase {uuid.uuid4().hex}"
        with httpx.Client(base_url=server.url(""), timeout=30) as client:
            created = client.post("/api/v1/auth/register", json={"email": email, "password": password})
            assert created.status_code == 201, created.text
            login = client.post("/api/v1/auth/login", json={"email": email, "password": password})
            assert login.status_code == 200, login.text
    exit_code, stopped_in = server.terminate(GRACE_SECONDS)
    print(f"{service}: migrated in {took:.1f}s; SIGTERM -> exit {exit_code} in {stopped_in:.1f}s")
    assert exit_code in CLEAN_EXIT and stopped_in < GRACE_SECONDS, server.logs()


def test_gateway_ends_open_event_streams_on_sigterm(start_container):
    from todo_shared.auth import issue_token
    from todo_shared.settings import ServiceSettings

    container = start_container("gateway")
    container.wait_status("/healthz", 200, timeout=60)
    token = issue_token(ServiceSettings(), uuid.uuid4(), "stream@example.com")  # the local key
    opened, ended = threading.Event(), threading.Event()
    received: list[bytes] = []

    def listen() -> None:
        headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}
        with (
            httpx.Client(timeout=httpx.Timeout(5, read=GRACE_SECONDS + 10)) as client,
            client.stream("GET", container.url("/api/v1/events"), headers=headers) as response,
        ):
            assert response.status_code == 200
            opened.set()
            for chunk in response.iter_bytes():
                received.append(chunk)
        ended.set()

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    assert opened.wait(20), container.logs()
    time.sleep(0.5)
    exit_code, stopped_in = container.terminate(GRACE_SECONDS)
    print(f"gateway with an open stream: SIGTERM -> exit {exit_code} in {stopped_in:.1f}s")
    assert exit_code in CLEAN_EXIT, container.logs()
    assert stopped_in < GRACE_SECONDS
    assert ended.wait(10), "the client's stream did not end"
    assert received, "the stream sent nothing before it ended"
