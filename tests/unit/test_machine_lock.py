"""testkit/machine.py: the L3 traffic's `alone()` waits for a test holding `shared()` in another
process to end, and a test asking for `shared()` waits while `alone()` is held."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HOLD = """
import sys, time
from pathlib import Path
from testkit import machine
hold, folder, name = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
with getattr(machine, hold)():
    (folder / f"{name}-held").touch()
    time.sleep(1.0)
    (folder / f"{name}-done").touch()
"""


def hold(kind: str, name: str, folder: Path, lock: Path) -> subprocess.Popen:
    env = {**os.environ, "TODO_TEST_LOCK": str(lock), "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", HOLD, kind, str(folder), name], env=env)


def wait_for(path: Path, process: subprocess.Popen) -> None:
    while not path.exists():
        assert process.poll() is None, f"exited before {path.name}"
        time.sleep(0.01)


def test_alone_waits_for_a_shared_holder_and_a_shared_one_for_alone(tmp_path):
    lock = tmp_path / "machine.lock"  # not this run's: this test itself holds that one, shared
    first = hold("shared", "first", tmp_path, lock)
    wait_for(tmp_path / "first-held", first)
    second = hold("alone", "second", tmp_path, lock)
    wait_for(tmp_path / "second-held", second)
    assert (tmp_path / "first-done").exists(), "alone() got the machine while a test held it"
    third = hold("shared", "third", tmp_path, lock)
    wait_for(tmp_path / "third-held", third)
    assert (tmp_path / "second-done").exists(), "a test started while the traffic held the machine"
    for process in (first, second, third):
        assert process.wait(10) == 0
