"""e2elib.PodLogs, the follower of the pods' log files that tells why a request failed, on a
folder laid out like the kubelet's (no cluster)."""

from __future__ import annotations

import os

import pytest

from .e2elib import PodLogs

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
