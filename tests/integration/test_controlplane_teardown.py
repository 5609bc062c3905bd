"""The control-plane fixture leaves nothing behind: not after a failing test, not after a kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from testkit.controlplane import STATE_FILE, ControlPlane
from testkit.procs import alive

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]

FAILING_TEST = """
import os, pathlib

def test_fails(controlplane):
    pathlib.Path(os.environ["RECORD"]).write_text(str(controlplane.workdir))
    assert False, "this test fails on purpose"
"""


def test_teardown_after_a_failing_test(tmp_path):
    test_file = tmp_path / "test_inner.py"
    test_file.write_text(FAILING_TEST)
    record = tmp_path / "workdir"
    env = {**os.environ, "RECORD": str(record), "TODO_TEST_NODES": "1", "PYTHONPATH": str(ROOT)}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "conftest", "-q", "-p", "no:cacheprovider", str(test_file)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 1, run.stdout + run.stderr
    assert "this test fails on purpose" in run.stdout
    workdir = Path(record.read_text())
    assert not workdir.exists()  # folder gone, so was its state file listing the processes
    stray = subprocess.run(["pgrep", "-f", str(workdir)], capture_output=True, text=True, check=False)
    assert stray.stdout == ""


def test_orphans_of_a_killed_owner_are_reaped(tmp_path):
    """A test run killed with SIGKILL cannot clean up; the next start does it for it."""
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    cp = ControlPlane.create(nodes=1)
    cp.start()
    state = json.loads((cp.workdir / STATE_FILE).read_text())
    state["owner"] = owner.pid  # pretend the sleeper owns it
    (cp.workdir / STATE_FILE).write_text(json.dumps(state))
    cp.processes.clear()  # and forget it here, as a killed process would
    os.kill(owner.pid, signal.SIGKILL)
    owner.wait()
    survivor = ControlPlane.create(nodes=1)  # creating the next one reaps the orphan
    try:
        deadline = time.monotonic() + 15
        while any(alive(pid) for pid in state["pids"]) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(alive(pid) for pid in state["pids"])
        assert not cp.workdir.exists()
    finally:
        survivor.stop()
