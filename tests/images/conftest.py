"""Fixtures for the image tests: the four service images, built once per run, and containers
started from them with podman and runc (the container runtime of rung L3, without kubelet).

`images` runs `scripts/images.py build` (what `make images` runs) once per session; podman's
layer cache makes that seconds when nothing changed, minutes on a fresh machine.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest
from image_testlib import HARDENED, ROOT, RUN, Container, build_script, podman

from testkit.procs import free_port


@pytest.fixture(scope="session")
def images(pytestconfig) -> dict[str, str]:
    """service -> image reference (localhost/todo-<service>:<commit>), built for this run."""
    capture = pytestconfig.pluginmanager.getplugin("capturemanager")
    command = [sys.executable, str(ROOT / "scripts" / "images.py"), "build", "--json"]
    last = ""
    with capture.global_and_fixture_disabled():
        print("\nimages: building the service images (scripts/images.py build) ...", flush=True)
        with subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True) as proc:
            assert proc.stdout is not None
            for line in proc.stdout:
                print(line, end="", flush=True)
                last = line
    assert proc.returncode == 0, f"scripts/images.py build failed (exit {proc.returncode})"
    built = json.loads(last)
    assert set(built) == set(build_script.SERVICES)
    return built


@pytest.fixture
def start_container(images) -> Iterator:
    """start_container(service, env={...}, host_network=False, command=()) -> Container, removed afterwards.

    Hardened like a restricted pod (HARDENED); TODO_ENVIRONMENT=local unless env says otherwise.
    With host_network the service listens on a free loopback port (TODO_PORT) and reaches the
    host's loopback (the PostgreSQL fixture); otherwise podman's bridge publishes port 8000.
    """
    names: list[str] = []

    def start(
        service: str,
        *,
        env: dict[str, str] | None = None,
        host_network: bool = False,
        command: tuple[str, ...] = (),
    ) -> Container:
        name = f"todo-test-{service}-{uuid.uuid4().hex[:8]}"
        port = free_port()
        environment = {"TODO_ENVIRONMENT": "local", **(env or {})}
        if host_network:
            network = ["--network", "host"]
            environment["TODO_PORT"] = str(port)
        else:
            network = ["--publish", f"127.0.0.1:{port}:{build_script.PORT}"]
        env_args = [arg for key, value in environment.items() for arg in ("--env", f"{key}={value}")]
        subprocess.run(
            [*RUN, "--detach", "--name", name, *HARDENED, *network, *env_args, images[service], *command],
            check=True,
            capture_output=True,
            text=True,
        )
        names.append(name)
        return Container(name, port)

    yield start
    for name in names:
        podman("rm", "--force", "--time", "0", name, check=False)
