"""`make dev` (python -m testkit.stack): the whole app in process mode comes up, answers
through nginx the way the ingress routes, and Ctrl-C leaves no process behind. Rung L2
(real processes: PostgreSQL, Kafka, Dapr scheduler, four services with their daprd, nginx)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from testkit.procs import alive

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
# `python -c IGNORING_SIGINT ARGS...` runs `python ARGS...` with SIGINT ignored (kept across exec).
IGNORING_SIGINT = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); "
    "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])"
)


def descendants(pid: int) -> set[int]:
    """Every process below `pid` in the parent tree (each has its own session and group)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def test_make_dev_serves_the_app_and_ctrl_c_leaves_nothing_behind():
    # A session of its own: every helper it starts either stays in it or is one of the
    # process groups the stack tracks; both are checked below. It starts with SIGINT ignored,
    # as a shell without job control starts a background job (and as this test's own runner
    # may have been started): Ctrl-C must stop it all the same.
    proc = subprocess.Popen(
        [sys.executable, "-c", IGNORING_SIGINT, "-m", "testkit.stack"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: list[str] = []
    url = None
    pids: set[int] = set()
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and url is None:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            found = re.search(r"ready in \d+s: open (http://\S+)/", line)
            url = found.group(1) if found else None
        assert url, "".join(lines[-40:])
        for line in iter(proc.stdout.readline, ""):
            lines.append(line)
            if "Ctrl-C stops everything" in line:
                break
        services = dict(re.findall(r"dev:\s+(api|notifier|gateway|web)\s+(http://\S+)", "".join(lines)))
        assert set(services) == {"api", "notifier", "gateway", "web"}

        assert httpx.get(f"{url}/signin").status_code == 200  # web, through nginx
        register = httpx.post(
            f"{url}/api/v1/auth/register",
            json={"email": "dev@example.com", "password": "correct horse battery"},
        )
        assert register.status_code == 201, register.text
        assert httpx.get(f"{url}/api/v1/notifications").status_code == 401  # notifier, signed out
        assert httpx.get(f"{url}/api/v1/events").status_code == 401  # gateway, signed out
        for name, service in services.items():
            assert httpx.get(f"{service}/readyz").status_code == 200, name

        pids = descendants(proc.pid)
        # 4 services and 4 daprd, the scheduler, nginx (+ worker), PostgreSQL (+ its workers), Kafka
        assert len(pids) >= 13, len(pids)
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        try:
            output, _ = proc.communicate(timeout=120)
            stopped_by_ctrl_c = True
        except subprocess.TimeoutExpired:
            proc.terminate()  # SIGTERM stops the stack too: leave nothing running behind a failure
            output, _ = proc.communicate(timeout=120)
            stopped_by_ctrl_c = False
        lines.append(output)
    assert stopped_by_ctrl_c, "Ctrl-C did not stop it in 120 s:\n" + "".join(lines[-40:])
    assert proc.returncode == 0, "".join(lines[-40:])
    assert "dev: stopped" in "".join(lines)
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = [pid for pid in pids if alive(pid)]
    assert not left, [_read(Path(f"/proc/{pid}/cmdline")) for pid in left]


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""
