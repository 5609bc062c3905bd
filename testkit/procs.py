"""Process and port helpers shared by the harnesses (control plane, PostgreSQL, Kafka, services)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import time
from pathlib import Path


def http_status(url: str, timeout: float = 2.0) -> int | None:
    """The status of a GET (redirects not followed), or None when nothing answers."""
    import httpx

    try:
        return httpx.get(url, timeout=timeout).status_code
    except httpx.HTTPError:
        return None


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now, and that this process has not
    handed out before: the kernel may offer a port again as soon as it is released, and a
    process given several ports at once (daprd's gRPC and metrics ports) must get distinct ones."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def alive(pid: int) -> bool:
    """Running, that is: exists and is not a zombie waiting for its parent to reap it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def kill_groups(pids: list[int], grace: float = 10) -> bool:
    """SIGTERM each process group, SIGKILL what is left after `grace` s; True if all left in time."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    clean = not any(alive(pid) for pid in pids)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    return clean


def reap_orphans(parent: Path, pattern: str, grace: float = 5) -> None:
    """Stop what a dead owner left running: folders matching `pattern` hold a state.json
    with {"owner": pid or 0 (detached, never reaped), "pids": [process group leaders]}."""
    for state_file in parent.glob(f"{pattern}/state.json"):
        with contextlib.suppress(OSError, ValueError, KeyError):
            state = json.loads(state_file.read_text())
            if state["owner"] and not alive(state["owner"]):
                kill_groups(list(state["pids"]), grace=grace)
                shutil.rmtree(state_file.parent, ignore_errors=True)
