"""Helpers of the image tests: podman with runc, hardened containers, one-off commands in an image."""

from __future__ import annotations

import contextlib
import importlib
import json
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from testkit.procs import http_status  # importing testkit also puts scripts/ on sys.path

build_script = importlib.import_module("images")  # scripts/images.py

ROOT = Path(__file__).resolve().parents[2]
PODMAN = list(build_script.PODMAN)
RUN = [*PODMAN, "run", *build_script.ULIMITS]
# What a restricted Pod Security Standard pod gets: a read-only root filesystem (here not even
# a writable /tmp), the image's numeric user, no capabilities, no privilege escalation.
HARDENED = [
    "--read-only",
    "--read-only-tmpfs=false",
    "--user",
    f"{build_script.UID}:{build_script.UID}",
    "--cap-drop=ALL",
    "--security-opt=no-new-privileges",
]


def podman(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*PODMAN, *args], capture_output=True, text=True, check=check, timeout=timeout)


@dataclass
class Container:
    name: str
    port: int

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def status(self, path: str) -> int | None:
        return http_status(self.url(path))

    def running(self) -> bool:
        state = podman("inspect", "--format", "{{.State.Running}}", self.name, check=False)
        return state.stdout.strip() == "true"

    def wait_status(self, path: str, want: int = 200, timeout: float = 60) -> float:
        """Seconds until `path` answers `want`; fails with the container's logs otherwise."""
        started = time.monotonic()
        last = None
        while time.monotonic() - started < timeout:
            last = self.status(path)
            if last == want:
                return time.monotonic() - started
            if not self.running():
                break
            time.sleep(0.1)
        raise AssertionError(f"{self.name}: {path} answered {last}, not {want}\n{self.logs()}")

    def logs(self) -> str:
        result = podman("logs", self.name, check=False)
        return result.stdout + result.stderr

    def log_records(self) -> list[dict]:
        records = []
        for line in self.logs().splitlines():
            with contextlib.suppress(ValueError):
                records.append(json.loads(line))
        return records

    def pid1_uids(self) -> list[int]:
        status = podman("exec", self.name, "cat", "/proc/1/status").stdout
        line = next(line for line in status.splitlines() if line.startswith("Uid:"))
        return [int(uid) for uid in line.split()[1:]]

    def wait_exit(self, timeout: float) -> tuple[int, float]:
        """Wait for the container to end by itself: (exit code, seconds)."""
        started = time.monotonic()
        waited = podman("wait", self.name, check=False, timeout=timeout)
        return int(waited.stdout.strip().splitlines()[-1]), time.monotonic() - started

    def terminate(self, grace: float) -> tuple[int, float]:
        """SIGTERM (what the kubelet sends), then wait up to `grace` s: (exit code, seconds)."""
        started = time.monotonic()
        podman("kill", "--signal", "TERM", self.name)
        waited = podman("wait", self.name, check=False, timeout=grace + 30)
        elapsed = time.monotonic() - started
        return int(waited.stdout.strip().splitlines()[-1]), elapsed


def run_in_image(
    image: str, *args: str, entrypoint: str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess:
    """Run a one-off command in the image (hardened, no network), capturing its output."""
    override = ["--entrypoint", entrypoint] if entrypoint else []
    return subprocess.run(
        [*RUN, "--rm", "--network", "none", *HARDENED, *override, image, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
