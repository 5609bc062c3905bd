"""The L3 end-to-end suite's one deployment: what `make up` does (site.yml on the local
inventory: the real single-node Kubernetes of testkit/node.py, the images imported into its
node, PostgreSQL, Kafka and the Dapr scheduler as pods, the app with explicit daprd sidecars,
the edge), run once for the whole suite and removed afterwards with `make down`'s playbook.

The suite shares its cluster with tests/cluster/test_node*: conftest.py keeps them on one
worker (one local cluster per machine)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@dataclass
class Run:
    rc: int
    report: dict
    output: str
    seconds: float

    def stats(self) -> dict:
        return self.report.get("stats", {}).get("local", {})

    def results(self, task: str) -> list[dict]:
        return [
            result
            for play in self.report.get("plays", [])
            for entry in play["tasks"]
            if entry["task"]["name"] == task
            for result in entry["hosts"].values()
        ]


@dataclass
class LocalApp:
    kubeconfig: Path
    url: str
    first: Run

    def playbook(self, name: str, *extra: str, timeout: float = 900) -> Run:
        return playbook(name, self.kubeconfig, *extra, timeout=timeout)

    def up(self, *extra: str) -> Run:
        """`make up` again (site.yml)."""
        return self.playbook("site.yml", *extra)

    def client(self):
        from kubernetes import config

        return config.new_client_from_config(str(self.kubeconfig), context="todo-local", persist_config=False)


def playbook(name: str, kubeconfig: Path, *extra: str, timeout: float = 900) -> Run:
    """ansible-playbook <name> -i inventories/local, as `make up` runs it (JSON report)."""
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json",
        "ANSIBLE_NOCOLOR": "1",
        "TODO_KUBECONFIG": str(kubeconfig),
    }
    argv = [str(BIN / "ansible-playbook"), "-i", "inventories/local", name, *extra]
    started = time.monotonic()
    proc = subprocess.run(
        argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    report = json.loads(proc.stdout[proc.stdout.index("{") :]) if "{" in proc.stdout else {}
    return Run(proc.returncode, report, proc.stdout[-4000:] + proc.stderr[-4000:], time.monotonic() - started)


@pytest.fixture(scope="module")
def local_app(tmp_path_factory) -> LocalApp:
    """site.yml on the local inventory (`make up`), once per module; `make down`'s playbook
    afterwards (the machine holds one local cluster: test_node*'s come before or after)."""
    from testkit.node import status

    kubeconfig = tmp_path_factory.mktemp("e2e") / "kube" / "todo-local"
    kubeconfig.parent.mkdir()
    first = playbook("site.yml", kubeconfig, "-e", "cluster_local_wait_seconds=600", timeout=1500)
    try:
        assert first.rc == 0, first.output
        print(f"\nmake up (site.yml, local): {first.seconds:.0f}s")
        said = first.results("Say where to open the app")
        yield LocalApp(kubeconfig, said[0]["msg"].rsplit(" ", 1)[-1].rstrip("/"), first)
    finally:
        if status()["running"]:
            down = playbook("playbooks/teardown.yml", kubeconfig, "-e", "cluster_teardown_confirm=todo-local")
            assert down.rc == 0, down.output
