"""The L3 end-to-end suite's one deployment: what `make up` does (site.yml on the local
inventory: the real single-node Kubernetes of testkit/node.py, the images imported into its
node, PostgreSQL, Kafka and the Dapr scheduler as pods, the app with explicit daprd sidecars,
the edge), run once for the whole suite (package scope: tests/e2e/ is a package) and removed
after its last test with `make down`'s playbook.

tests/e2e/test_node.py checks the cluster itself on it. tests/cluster/test_node_teardown.py
starts clusters of its own: conftest.py keeps it on the suite's worker (one local cluster per
machine)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def tasks(report: dict) -> list[dict]:
    """Every task entry of an ansible.posix.json report, in run order."""
    return [entry for play in report.get("plays", []) for entry in play["tasks"]]


@dataclass
class Run:
    rc: int
    report: dict
    output: str
    seconds: float

    def stats(self) -> dict:
        return self.report.get("stats", {}).get("local", {})

    def timed(self) -> list[tuple[str, datetime, datetime]]:
        """Every task of the run that has a duration: (name, start, end), in run order."""
        return [
            (entry["task"]["name"], *(datetime.fromisoformat(took[k]) for k in ("start", "end")))
            for entry in tasks(self.report)
            if (took := entry["task"].get("duration", {})).get("start") and took.get("end")
        ]

    def ended(self, task: str) -> datetime:
        """When the first task named `task` (a role's task: "<role> : <task>" too) ended."""
        return next(end for name, _, end in self.timed() if name == task or name.endswith(f" : {task}"))

    def slowest(self, count: int = 8) -> list[tuple[float, str]]:
        """The `count` longest tasks of the run: (seconds, name), longest first."""
        seconds = [((end - start).total_seconds(), name) for name, start, end in self.timed()]
        return sorted(seconds, reverse=True)[:count]

    def results(self, task: str) -> list[dict]:
        """The results of the task named `task` (a role's task: "<role> : <task>" too)."""
        return [
            result
            for entry in tasks(self.report)
            if entry["task"]["name"] == task or entry["task"]["name"].endswith(f" : {task}")
            for result in entry["hosts"].values()
        ]


@dataclass
class LocalApp:
    kubeconfig: Path
    url: str
    first: Run
    first_tag: str = ""  # the image tag of the release `make up` installed (revision 1)

    def playbook(self, name: str, *extra: str, timeout: float = 900) -> Run:
        return playbook(name, self.kubeconfig, *extra, timeout=timeout)

    def down(self, *extra: str) -> Run:
        """`make down` (playbooks/teardown.yml with the typed confirmation)."""
        return self.playbook("playbooks/teardown.yml", "-e", "cluster_teardown_confirm=todo-local", *extra)

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
    failed = [
        f"FAILED {entry['task']['name']}: {result.get('msg', '')}"
        for entry in tasks(report)
        for result in entry["hosts"].values()
        if result.get("failed")
    ]
    # The report's end (the stats) and, first, what failed: a failure's message is far from the end.
    output = "\n".join([*failed, proc.stdout[-4000:] + proc.stderr[-4000:]])
    return Run(proc.returncode, report, output, time.monotonic() - started)


@pytest.fixture(scope="package")
def local_app(tmp_path_factory) -> LocalApp:
    """site.yml on the local inventory (`make up`), once for the suite; `make down`'s playbook
    after its last test (the machine holds one local cluster: test_node*'s come before).
    TODO_E2E_KEEP=1 leaves the cluster up for a look afterwards (a later run adopts it)."""
    from testkit.node import status

    kubeconfig = tmp_path_factory.mktemp("e2e") / "kube" / "todo-local"
    kubeconfig.parent.mkdir()
    first = playbook("site.yml", kubeconfig, "-e", "cluster_local_wait_seconds=600", timeout=1500)
    try:
        assert first.rc == 0, first.output
        print(f"\nmake up (site.yml, local): {first.seconds:.0f}s; its longest tasks:")
        for seconds, name in first.slowest():
            print(f"  {seconds:6.1f}s  {name}")
        said = first.results("Say where to open the app")
        tag = json.loads(subprocess.check_output([sys.executable, "scripts/images.py", "refs"], cwd=ROOT))[
            "api"
        ]
        app = LocalApp(
            kubeconfig, said[0]["msg"].rsplit(" ", 1)[-1].rstrip("/"), first, tag.rsplit(":", 1)[1]
        )
        yield app
    finally:
        if os.environ.get("TODO_E2E_KEEP"):
            print(f"\nTODO_E2E_KEEP: the local cluster stays up (make down removes it); {kubeconfig}")
        elif status()["running"]:
            down = LocalApp(kubeconfig, "", first).down()
            assert down.rc == 0, down.output
            assert down.stats()["changed"] == 1, down.output
            assert not status()["running"]
