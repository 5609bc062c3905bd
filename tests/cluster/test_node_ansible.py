"""roles/cluster with provider local (rung L3): playbooks/cluster.yml on the local inventory
starts the single-node Kubernetes of testkit/node.py and writes its kubeconfig; a second run
adopts it and changes nothing; playbooks/teardown.yml removes it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from testkit.node import NODE_NAME, status

pytestmark = pytest.mark.cluster
ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def playbook(name: str, kubeconfig: Path, *extra: str) -> tuple[int, dict, str]:
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json",
        "ANSIBLE_NOCOLOR": "1",
        "TODO_KUBECONFIG": str(kubeconfig),
    }
    argv = [str(BIN / "ansible-playbook"), "-i", "inventories/local", f"playbooks/{name}.yml"]
    argv += ["-e", "cluster_provider=local", "-e", "cluster_local_wait_seconds=300", *extra]
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900, check=False)
    report = json.loads(proc.stdout[proc.stdout.index("{") :]) if "{" in proc.stdout else {}
    return (
        proc.returncode,
        report.get("stats", {}).get("local", {}),
        proc.stdout[-3000:] + proc.stderr[-3000:],
    )


def test_l3_cluster_role_local_provider_creates_adopts_and_removes(tmp_path):
    kubeconfig = tmp_path / "kube" / "todo-local"
    kubeconfig.parent.mkdir()
    try:
        rc, stats, output = playbook("cluster", kubeconfig)
        assert rc == 0, output
        assert stats["changed"] >= 2, stats  # started, kubeconfig written
        assert status()["running"]
        config = yaml.safe_load(kubeconfig.read_text())
        assert config["current-context"] == "todo-local"
        assert oct(kubeconfig.stat().st_mode & 0o777) == "0o600"

        from kubernetes import client
        from kubernetes import config as kube_config

        api = kube_config.new_client_from_config(str(kubeconfig), context="todo-local", persist_config=False)
        assert client.CoreV1Api(api).read_node(NODE_NAME).metadata.name == NODE_NAME

        rc, stats, output = playbook("cluster", kubeconfig)
        assert rc == 0, output
        assert stats["changed"] == 0, f"a second run adopts the cluster and changes nothing: {stats}"

        rc, stats, output = playbook("teardown", kubeconfig, "--check", "-e", "cluster_teardown_confirm=todo")
        assert rc == 0, output
        assert status()["running"], "check mode removes nothing"
    finally:
        rc, stats, output = playbook("teardown", kubeconfig, "-e", "cluster_teardown_confirm=todo")
    assert rc == 0, output
    assert stats["changed"] == 1
    assert not status()["running"]
