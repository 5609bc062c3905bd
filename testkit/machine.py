"""Two pytest-xdist workers share this machine's two cores. The L3 suite's heavy traffic
(SC-002's 80 requests/s, SC-005's CPU load) saturates them: what a test on the other worker runs
then starves the traffic (a notifier read answered 503 when its database check timed out).

`alone()` holds the machine's test lock exclusively: it waits for the other worker's running
test to end and holds off its next one. `shared()` is what every other test holds (conftest.py,
an autouse fixture). One lock file per test run: conftest.py makes it, names it in
TODO_TEST_LOCK (the workers inherit that) and removes it. A lock is released when its holder
closes it or dies.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

VARIABLE = "TODO_TEST_LOCK"


def _path() -> Path:
    return Path(os.environ.get(VARIABLE) or Path(tempfile.gettempdir()) / f"todo-tests-{os.getpid()}.lock")


@contextlib.contextmanager
def _hold(mode: int) -> Iterator[None]:
    with _path().open("a") as lock:
        fcntl.flock(lock, mode)
        yield  # closing the file releases the lock


def alone() -> contextlib.AbstractContextManager[None]:
    return _hold(fcntl.LOCK_EX)


def shared() -> contextlib.AbstractContextManager[None]:
    return _hold(fcntl.LOCK_SH)
