"""testkit/do_api_double.py as a process (Molecule's cluster_doks starts and stops it): `start`
prints what a client needs only once the double answers, and never reads a half-written env.json."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from testkit import do_api_double
from testkit.procs import alive, http_status

ROOT = Path(__file__).resolve().parents[2]


def double_cli(command: str, folder: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "testkit.do_api_double", command, "--dir", str(folder)],
        cwd=ROOT,
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_start_prints_the_proxy_of_a_running_double_and_stop_ends_it(tmp_path):
    (tmp_path / "token").write_text("a-token\n")
    started = double_cli("start", tmp_path)
    assert started.returncode == 0, started.stderr
    env = json.loads(started.stdout)
    try:
        assert alive(env["pid"])
        assert Path(env["SSL_CERT_FILE"]).is_file()
        # The double is an HTTPS proxy: a plain GET is refused, with an answer.
        assert http_status(env["HTTPS_PROXY"] + "/v2/account") == 405
    finally:
        stopped = double_cli("stop", tmp_path)
    assert stopped.returncode == 0, stopped.stderr
    assert not alive(env["pid"])
    assert not (tmp_path / "env.json").exists()


def test_env_json_is_never_seen_half_written(tmp_path, monkeypatch):
    """A write in place creates the file, empty, before its text is in it; `start` polls for the
    file and would parse that empty file (CI failed this way on 2026-11-28). Writes are slowed
    here so that moment lasts, and a reader polling as `start` does must only ever see it whole."""
    write_text = Path.write_text

    def slow_write_text(self, data, *args, **kwargs):
        self.touch()
        time.sleep(0.3)
        return write_text(self, data, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", slow_write_text)
    env = {"HTTPS_PROXY": "http://127.0.0.1:1", "SSL_CERT_FILE": "/ca.pem"}
    writer = threading.Thread(target=do_api_double._publish, args=(tmp_path, env))
    writer.start()
    while True:
        finished = not writer.is_alive()
        seen = do_api_double._published_env(tmp_path)
        if seen is not None:
            break
        assert not finished, "the writer ended without publishing"
        time.sleep(0.01)
    writer.join()
    assert seen == env
    assert os.listdir(tmp_path) == ["env.json"]
