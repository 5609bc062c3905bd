"""Run real `ansible-playbook` processes from tests and read their results."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


@dataclass
class PlaybookRun:
    rc: int
    stdout: str
    stderr: str
    report: dict

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def task(self, name: str) -> dict:
        """The localhost result of the task called `name` (the last one when repeated)."""
        found = None
        for play in self.report.get("plays", []):
            for task in play.get("tasks", []):
                if task["task"]["name"] == name:
                    found = task["hosts"].get("localhost")
        if found is None:
            raise KeyError(f"no result for task {name!r}; output:\n{self.output[-3000:]}")
        return found

    @property
    def stats(self) -> dict:
        return self.report.get("stats", {}).get("localhost", {})


def run_playbook(
    tmp_path: Path,
    tasks: list[dict],
    *,
    extra_args: tuple[str, ...] = (),
    env: dict | None = None,
    timeout: float = 600,
    verbosity: int = 0,
) -> PlaybookRun:
    """Run `tasks` in one play on localhost with the repository's ansible.cfg; JSON results."""
    playbook = tmp_path / "playbook.yml"
    playbook.write_text(
        yaml.safe_dump(
            [
                {
                    "name": "Test play",
                    "hosts": "localhost",
                    "connection": "local",
                    "gather_facts": False,
                    "tasks": tasks,
                }
            ],
            sort_keys=False,
        )
    )
    run_env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json",
        "ANSIBLE_PYTHON_INTERPRETER": sys.executable,
        "ANSIBLE_LOCALHOST_WARNING": "false",
        "ANSIBLE_INVENTORY_UNPARSED_WARNING": "false",
        "ANSIBLE_NOCOLOR": "1",
        **(env or {}),
    }
    argv = [str(BIN / "ansible-playbook"), "-i", "localhost,", str(playbook), *extra_args]
    if verbosity:
        argv.append("-" + "v" * verbosity)
    proc = subprocess.run(
        argv, cwd=ROOT, env=run_env, capture_output=True, text=True, timeout=timeout, check=False
    )
    try:
        start = proc.stdout.index("{")
        report = json.loads(proc.stdout[start:])
    except ValueError:
        report = {}
    return PlaybookRun(proc.returncode, proc.stdout, proc.stderr, report)
