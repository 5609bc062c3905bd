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

    def failure(self, name: str) -> str:
        """The message of task `name`, which must have failed clearly: no traceback in its
        result (ansible-core 2.19 sets `exception` on every failure) or anywhere in the output."""
        result = self.task(name)
        assert result.get("failed") is True, f"{name} did not fail: {result}"
        assert "Traceback" not in str(result.get("exception", "")) and "Traceback" not in self.output
        return result["msg"]

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
        # The module files of this run under the test's own folder, not ~/.ansible/tmp.
        "ANSIBLE_REMOTE_TMP": str(tmp_path / "ansible-tmp"),
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


def run_cases(tmp_path: Path, cases: dict[str, dict]) -> PlaybookRun:
    """Module calls that each fail on their own, as the tasks of one play: each task named by
    its case, its failure ignored so the next one runs. One ansible-playbook start (about a
    second of CPU) serves them all; `.task(case)` is each case's result, its `failed` what would
    have ended a run of that call alone."""
    tasks = [{**task, "name": case, "ignore_errors": True} for case, task in cases.items()]
    run = run_playbook(tmp_path, tasks)
    for case in cases:
        run.task(case)  # a KeyError, with the output, names a case that did not run
    return run


def app_secret_values(spec: dict) -> dict[str, str]:
    """Fresh random values for one entry of an inventory's `app_secrets` (never logged)."""
    import secrets

    values = {}
    for key in spec["keys"]:
        token = secrets.token_hex(24)
        values[key["name"]] = (
            f"postgresql://app:{token}@db.example.net:5432/todo" if key.get("format") == "url" else token
        )
    return values


def app_secrets(env: str) -> list[dict]:
    """The Secrets inventories/<env> says the release references."""
    return yaml.safe_load((ROOT / "inventories" / env / "group_vars" / "all" / "app.yml").read_text())[
        "app_secrets"
    ]


def put_app_secrets(core_api, namespace: str, env: str) -> None:
    """Create `namespace` with every Secret the `env` inventory lists, with random values."""
    core_api.create_namespace({"metadata": {"name": namespace}})
    for spec in app_secrets(env):
        core_api.create_namespaced_secret(
            namespace, {"metadata": {"name": spec["name"]}, "stringData": app_secret_values(spec)}
        )


class Site:
    """`ansible-playbook <playbook> -i inventories/<env>` as operators and CI run it, pointed at a
    test cluster: only the connection, the smoke-check mode (kwok pods cannot answer HTTP) and
    the timeouts are overridden."""

    def __init__(self, kubeconfig: Path, context: str, workdir: Path, smoke_check: str = "endpoints"):
        self.overrides = workdir / "site-overrides.yml"
        self.overrides.write_text(
            yaml.safe_dump(
                {
                    "todo_kubeconfig": str(kubeconfig),
                    "todo_kube_context": context,
                    "app_smoke_check": smoke_check,
                    "app_readiness_window": 20,
                    "app_rollout_timeout": 180,
                    "app_lock_wait_timeout": 120,
                }
            )
        )

    def run(self, env: str, *args: str, playbook: str = "site.yml", expect_rc: int | None = 0) -> str:
        argv = [
            str(BIN / "ansible-playbook"),
            playbook,
            "-i",
            f"inventories/{env}",
            "-e",
            f"@{self.overrides}",
        ]
        if playbook == "site.yml":
            argv += ["--tags", "app"]
        proc = subprocess.run(
            [*argv, *args],
            cwd=ROOT,
            env={
                **os.environ,
                "ANSIBLE_NOCOLOR": "1",
                "ANSIBLE_FORCE_COLOR": "0",
                "TODO_DEPLOY_HOLDER": "harness",
            },
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        output = proc.stdout + proc.stderr
        if expect_rc is not None and proc.returncode != expect_rc:
            raise AssertionError(
                f"{playbook} -i inventories/{env} exited {proc.returncode}:\n{output[-6000:]}"
            )
        return output
