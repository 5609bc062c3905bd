"""scripts/synthetic_check.py, the continuous health checks around a production rollout
(SC-002), against real HTTP servers on loopback: a service that answers 200 throughout passes;
one that fails a single check, answers too slowly, redirects or is not there fails the run;
the wrapped command's own failure is the run's failure. No cluster involved (rung L0 of the
ladder: what is proven here is the checker, not a rollout)."""

from __future__ import annotations

import os
import sys
import textwrap
import threading

import pytest
from wf_testlib import Answer, ScriptedServer, Seen, run_script

from testkit.procs import free_port

pytestmark = pytest.mark.integration


def _service(fail_at: set[int] | None = None, status: int = 503, delay_at: set[int] | None = None):
    """A service whose /readyz answers 200, except the n-th request (1-based) in fail_at (status)
    or delay_at (answered after 1 s). /_seen tells the wrapped command how many checks came."""
    lock = threading.Lock()
    count = {"n": 0}
    holder: dict[str, ScriptedServer] = {}

    def respond(seen: Seen) -> Answer:
        if seen.path == "/_seen":
            return Answer(200, str(len(holder["server"].requests("/readyz"))).encode())
        with lock:
            count["n"] += 1
            n = count["n"]
        if fail_at and n in fail_at:
            return Answer(status, b"down")
        if delay_at and n in delay_at:
            return Answer(200, b"ok", delay=1.0)
        return Answer(200, b"ok")

    holder["server"] = ScriptedServer(respond)
    return holder["server"]


def _rollout(tmp_path, server: ScriptedServer, checks: int, exit_code: int = 0) -> str:
    """A stand-in for the deploy command: it lasts until the checker has made `checks` checks
    of /readyz (asked at /_seen, with a deadline), then exits with exit_code."""
    script = tmp_path / "rollout.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import sys, time, urllib.request
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                with urllib.request.urlopen("{server.url}/_seen", timeout=5) as answer:
                    if int(answer.read()) >= {checks}:
                        sys.exit({exit_code})
                time.sleep(0.05)
            sys.exit(9)
            """
        )
    )
    return str(script)


def _check(*args: str, env: dict | None = None):
    return run_script("synthetic_check.py", *args, env={**os.environ, **(env or {})}, timeout=90)


def _during_rollout(tmp_path, server: ScriptedServer, checks: int, *options: str, exit_code: int = 0):
    """The checker on the server's /readyz every 0.1 s, around a rollout lasting `checks` checks."""
    rollout = _rollout(tmp_path, server, checks, exit_code)
    return _check(f"--url={server.url}/readyz", "--interval=0.1", *options, "--", sys.executable, rollout)


def test_a_service_that_stays_up_passes_every_check_during_the_rollout(tmp_path):
    with _service() as server:
        result = _during_rollout(tmp_path, server, 6, "--settle=0.2")
    assert result.returncode == 0, result.stdout + result.stderr
    checks = len(server.requests("/readyz"))
    assert checks >= 6  # checked throughout the command, not once before or after it
    assert f"| {server.url}/readyz | {checks} | 0 |" in result.stdout
    assert "FAIL" not in result.stdout


def test_one_failed_check_fails_the_run(tmp_path):
    with _service(fail_at={3}) as server:
        result = _during_rollout(tmp_path, server, 6, "--settle=0")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "FAIL" in result.stdout and f"{server.url}/readyz: HTTP 503" in result.stdout
    assert " | 1 |" in result.stdout  # the summary counts exactly the one failure
    assert "availability was not 100%" in result.stderr


def test_the_rollouts_failure_is_the_runs_failure(tmp_path):
    with _service() as server:
        result = _during_rollout(tmp_path, server, 2, "--settle=0", exit_code=3)
    assert result.returncode == 3, result.stdout + result.stderr
    assert "the command failed (exit 3)" in result.stderr


def test_a_check_slower_than_its_timeout_fails(tmp_path):
    with _service(delay_at={2}) as server:
        result = _during_rollout(tmp_path, server, 4, "--timeout=0.3", "--settle=0")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "TimeoutError" in result.stdout


def test_nothing_listening_fails():
    url = f"http://127.0.0.1:{free_port()}/readyz"
    result = _check("--url", url, "--interval", "0.2", "--duration", "0.5")
    assert result.returncode == 1
    assert "ConnectionRefusedError" in result.stdout


def test_a_redirect_is_not_a_pass():
    server = ScriptedServer(lambda seen: Answer(301, b"", {"Location": "https://elsewhere.example/"}))
    with server:
        result = _check("--url", f"{server.url}/readyz", "--interval", "0.2", "--duration", "0.3")
    assert result.returncode == 1
    assert "HTTP 301" in result.stdout


def test_every_url_is_checked_and_the_summary_reaches_the_job_summary(tmp_path):
    summary = tmp_path / "summary.md"
    with _service() as one, _service() as two:
        result = _check(
            f"--url={one.url}/readyz",
            f"--url={two.url}/readyz",
            "--interval=0.1",
            "--duration=0.5",
            env={"GITHUB_STEP_SUMMARY": str(summary)},
        )
    assert result.returncode == 0, result.stdout + result.stderr
    assert one.requests("/readyz") and two.requests("/readyz")
    table = summary.read_text()
    assert f"| {one.url}/readyz |" in table and f"| {two.url}/readyz |" in table


@pytest.mark.parametrize("url", ["/readyz", "https:///readyz", "ftp://example.com/"])
def test_a_url_without_a_host_is_refused_before_anything_runs(url):
    """An unset APP_URL makes "$APP_URL/readyz" a bare path: the checker says so."""
    result = _check("--url", url, "--duration", "1")
    assert result.returncode == 2
    assert "not an http(s) URL with a host" in result.stderr
