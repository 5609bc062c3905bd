"""e2elib.PodLogs, the follower of the pods' log files that tells why a request failed, on a
folder laid out like the kubelet's, and the figures a Load reports (no cluster)."""

from __future__ import annotations

import os

import pytest

from .e2elib import Load, PodLogs

pytestmark = pytest.mark.unit


def test_a_pod_whose_logs_go_while_they_are_listed_is_passed_over(tmp_path, monkeypatch):
    kept = tmp_path / "todo-local_todo-api-1_uid1" / "api" / "0.log"
    gone = tmp_path / "todo-local_todo-api-2_uid2"
    for folder in (kept.parent, gone / "api"):
        folder.mkdir(parents=True)
    kept.write_text('2026-11-27T10:00:00.5Z stdout F {"level": "info"}\n')
    real_scandir = os.scandir

    def scandir(path="."):  # the kubelet removes the deleted pod's folder while it is listed
        if str(path) == str(gone):
            raise FileNotFoundError(2, "No such file or directory", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    with PodLogs(("todo-api",), root=tmp_path) as logs, kept.open("a") as log:
        log.write('2026-11-27T10:00:01.5Z stdout F {"level": "error", "message": "boom"}\n')
    assert [line for _, line in logs.lines] == [
        'todo-api-1/api: 2026-11-27T10:00:01.5Z stdout F {"level": "error", "message": "boom"}'
    ]


def test_slow_answers_are_kept_with_the_warnings_and_quick_ones_are_not(tmp_path):
    log = tmp_path / "todo-local_todo-web-1_uid1" / "web" / "0.log"
    log.parent.mkdir(parents=True)
    log.write_text("")
    lines = [
        '2026-11-27T10:00:01.5Z stdout F {"level": "info", "route": "/tasks", "duration_ms": 31.2}',
        '2026-11-27T10:00:02.5Z stdout F {"level": "info", "route": "/tasks", "duration_ms": 16250.07}',
        '2026-11-27T10:00:03.5Z stdout F {"level": "warning", "message": "api unreachable"}',
    ]
    with PodLogs(("todo-web",), root=tmp_path) as logs, log.open("a") as out:
        out.write("".join(f"{line}\n" for line in lines))
    assert [line for _, line in logs.lines] == [f"todo-web-1/web: {line}" for line in lines[1:]]
    failed_at = logs.lines[0][0] - 15  # the client gave up 15 s into the request the web logs at its end
    assert logs.around([failed_at], before=5) == [f"todo-web-1/web: {line}" for line in lines[1:]]


def test_the_load_reports_how_fast_it_was_answered():
    load = Load("http://edge", {}, {"/": 200})
    assert load.latency == "no request"
    load.durations = [0.1 * n for n in range(1, 101)]  # 0.1 s .. 10 s
    assert load.latency == "answered in 5.10 s (median), 10.00 s (p99), 10.00 s (slowest)"
