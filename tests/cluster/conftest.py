"""Fixtures of the cluster tests: the DigitalOcean API test double (testkit/do_api_double.py)
and real `ansible-playbook` runs of playbooks/cluster.yml and playbooks/teardown.yml against
the real inventories, the double reached through HTTPS_PROXY."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from testkit.do_api_double import DoApiDouble

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@dataclass
class Run:
    rc: int
    output: str
    report: dict

    def stats(self) -> dict:
        return next(iter(self.report.get("stats", {}).values()), {})

    def changed_tasks(self) -> list[str]:
        return [
            task["task"]["name"]
            for play in self.report.get("plays", [])
            for task in play["tasks"]
            for result in task["hosts"].values()
            if result.get("changed")
        ]


@pytest.fixture
def do_api(tmp_path):
    """The DigitalOcean API test double, with a fresh token; stopped afterwards."""
    double = DoApiDouble(tmp_path / "do-api-double", secrets.token_urlsafe(48)).start()
    yield double
    double.stop()


@pytest.fixture
def kubeconfig(tmp_path) -> Path:
    """Where the role writes the kubeconfig in a test (a folder the role must create)."""
    return tmp_path / "kube" / "todo-do.yaml"


@pytest.fixture
def run_playbook(do_api, kubeconfig, tmp_path):
    """Run a playbook of the repository against an inventory, reaching the test double.

    json=True: ansible.posix.json output (parsed into Run.report); otherwise the default
    callback, as CI shows it. `credential` is DIGITALOCEAN_ACCESS_TOKEN: "double" the double's
    own token, None unset, anything else that string."""

    def run(
        playbook: str,
        *extra: str,
        inventory: str = "staging",
        credential: str | None = "double",
        json_output: bool = True,
        verbosity: int = 0,
    ) -> Run:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DIGITALOCEAN_", "DO_"))}
        env.update(do_api.env)
        env.update(
            ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
            ANSIBLE_NOCOLOR="1",
            ANSIBLE_FORCE_COLOR="0",
            ANSIBLE_LOCAL_TEMP=str(tmp_path / "ansible-tmp"),
            KUBECONFIG=str(kubeconfig),
        )
        if json_output:
            env["ANSIBLE_STDOUT_CALLBACK"] = "ansible.posix.json"
        if credential is not None:
            env["DIGITALOCEAN_ACCESS_TOKEN"] = do_api.token if credential == "double" else credential
        argv = [str(BIN / "ansible-playbook"), "-i", f"inventories/{inventory}", f"playbooks/{playbook}.yml"]
        argv += [*extra, "-e", "cluster_doks_poll_delay=1"]
        if verbosity:
            argv.append("-" + "v" * verbosity)
        proc = subprocess.run(
            argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False
        )
        output = proc.stdout + proc.stderr
        report = {}
        if json_output and "{" in proc.stdout:
            report = json.loads(proc.stdout[proc.stdout.index("{") :])
        return Run(proc.returncode, output, report)

    return run
