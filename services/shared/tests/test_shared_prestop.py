"""The preStop hook of an invocation target (python -m todo_shared.prestop) against a real
daprd (testkit.dapr, rung L1): partway through its wait it stops the sidecar with the app's
token."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time

import pytest

from testkit.dapr import DaprEnv
from testkit.procs import free_port

pytestmark = pytest.mark.integration


def prestop(env: dict[str, str], *args: str) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "todo_shared.prestop", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done, time.monotonic() - started


def test_the_hook_stops_the_real_daprd_with_the_apps_token_partway_through_its_wait(tmp_path):
    token = secrets.token_urlsafe(24)
    with DaprEnv.create(parent=str(tmp_path), scheduler=False) as env:
        sidecar = env.sidecar("api", None, api_token=token)
        daprd = sidecar.process.popen

        refused, _ = prestop({**sidecar.env(), "DAPR_API_TOKEN": "not-the-token"}, "--stop-dapr-after", "0")
        assert refused.returncode == 0
        assert "daprd was not stopped: shutdown refused: 401" in refused.stderr
        assert token not in refused.stderr
        assert daprd.poll() is None, "a wrong token must not stop the sidecar"

        started = time.monotonic()
        hook = subprocess.Popen(
            [sys.executable, "-m", "todo_shared.prestop", "--sleep", "4", "--stop-dapr-after", "2"],
            env={**os.environ, **sidecar.env()},
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(1)
        assert daprd.poll() is None, "daprd serves through the first part of the wait"
        daprd.wait(timeout=30)  # then stops gracefully (--dapr-graceful-shutdown-seconds=5 at most)
        assert time.monotonic() - started >= 2
        assert hook.wait(timeout=30) == 0
        assert hook.stderr.read() == ""
        assert time.monotonic() - started >= 4, "the hook waits its whole --sleep"


def test_without_a_reachable_sidecar_the_hook_reports_it_and_still_sleeps():
    done, seconds = prestop({"DAPR_HTTP_PORT": str(free_port())}, "--stop-dapr-after", "0", "--sleep", "1")
    assert done.returncode == 0
    assert "daprd was not stopped: shutdown: sidecar unreachable (ConnectError)" in done.stderr
    assert seconds >= 1


def test_a_negative_sleep_or_a_stop_outside_the_wait_is_refused():
    done, _ = prestop({}, "--sleep", "-1")
    assert done.returncode == 2
    assert "--sleep must be 0 or more" in done.stderr
    done, _ = prestop({}, "--sleep", "1", "--stop-dapr-after", "2")
    assert done.returncode == 2
    assert "--stop-dapr-after must be between 0 and --sleep" in done.stderr
