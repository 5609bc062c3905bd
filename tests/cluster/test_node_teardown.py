"""One command creates the local cluster, one destroys it, and nothing is left behind (rung L3):
no process, no mount under its state folder, no network namespace or veth of its pods, no
bridge, no iptables rule of kube-proxy, kubelet or its CNI network, no cgroup, no folder.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from testkit.node import (
    BRIDGE,
    CGROUP_ROOT,
    DEFAULT_PARENT,
    NETNS_DIR,
    PREFIX,
    cgroup_hierarchies,
    iptables_leftovers,
    mounts_under,
    node_processes,
    wait_for,
)

pytestmark = pytest.mark.cluster
ROOT = Path(__file__).resolve().parents[2]


def netns() -> set[str]:
    """containerd's pod network namespaces (cni-<id>); podman's (netns-<id>), which tests on
    the other worker may create meanwhile, are not the cluster's."""
    return {p.name for p in NETNS_DIR.glob("cni-*")}


def clusters() -> set[Path]:
    return set(DEFAULT_PARENT.glob(f"{PREFIX}*"))


def test_l3_up_then_down_leaves_nothing_behind():
    before_netns, before_clusters = netns(), clusters()
    started = time.monotonic()
    up = subprocess.run(
        [sys.executable, "-m", "testkit.node", "up", "--wait", "300"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    up_seconds = time.monotonic() - started
    [workdir] = clusters() - before_clusters
    try:
        assert up.returncode == 0, up.stderr[-4000:]
        kubeconfig = Path(up.stdout.strip().splitlines()[-1])
        assert kubeconfig.is_file()
        print(f"\n`python -m testkit.node up` took {up_seconds:.0f}s")

        # a workload of our own, so there is a pod network namespace, a veth and CNI rules to remove
        from kubernetes import client, config

        core = client.CoreV1Api(config.new_client_from_config(str(kubeconfig), persist_config=False))
        name = f"sleeper-{uuid.uuid4().hex[:6]}"
        pause = next(i for i in _images(workdir) if "todo-pause" in i)
        core.create_namespaced_pod(
            "default",
            {
                "metadata": {"name": name},
                "spec": {
                    "containers": [
                        {
                            "name": "sleep",
                            "image": pause,
                            "imagePullPolicy": "Never",
                            "resources": {"limits": {"cpu": "50m", "memory": "16Mi"}},
                        }
                    ]
                },
            },
        )
        wait_for(
            "the pod Running", lambda: core.read_namespaced_pod(name, "default").status.phase == "Running", 90
        )
        assert mounts_under(workdir), "a running pod has mounts under the state folder"
        assert node_processes(workdir)
        assert netns() - before_netns, "the pods have network namespaces"
        assert iptables_leftovers(), "kube-proxy wrote its rules"
    finally:
        down = subprocess.run(
            [sys.executable, "-m", "testkit.node", "down", "--dir", str(workdir)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    assert down.returncode == 0, down.stderr[-4000:]
    assert not workdir.exists()
    assert node_processes(workdir) == []
    assert mounts_under(workdir) == []
    assert netns() - before_netns == set()
    assert subprocess.run(["ip", "link", "show", BRIDGE], capture_output=True, check=False).returncode != 0
    assert iptables_leftovers() == []
    assert [h for h in cgroup_hierarchies() if (h / CGROUP_ROOT).exists()] == []


def _images(workdir: Path) -> list[str]:
    listed = subprocess.run(
        [
            "ctr",
            "--address",
            str(workdir / "containerd" / "containerd.sock"),
            "-n",
            "k8s.io",
            "images",
            "ls",
            "-q",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return listed.stdout.split()


KILLED_OWNER = """
import sys, time
from testkit.node import LocalCluster
cluster = LocalCluster.create()
cluster.start(wait=300)
print(cluster.workdir, flush=True)
time.sleep(3600)
"""


def test_l3_a_killed_owner_leaves_nothing_after_the_next_start():
    """SIGKILL the process that started a cluster (a cancelled test run): the daemons live on,
    and the next `LocalCluster.create()` removes all of it before anything else."""
    from testkit.node import LocalCluster

    before_netns = netns()
    owner = subprocess.Popen(
        [sys.executable, "-c", KILLED_OWNER],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert owner.stdout is not None
        workdir = Path(owner.stdout.readline().strip())
        assert workdir.name.startswith(PREFIX) and workdir.is_dir(), "the cluster started"
        assert node_processes(workdir)
    finally:
        owner.kill()
        owner.wait()
    assert node_processes(workdir), "its daemons outlive it"
    successor = LocalCluster.create()  # sweeps the orphan; started or not, it owns a new folder
    try:
        assert not workdir.exists()
        assert node_processes(workdir) == []
        assert mounts_under(workdir) == []
        assert netns() - before_netns == set()
        assert (
            subprocess.run(["ip", "link", "show", BRIDGE], capture_output=True, check=False).returncode != 0
        )
        assert iptables_leftovers() == []
        assert [h for h in cgroup_hierarchies() if (h / CGROUP_ROOT).exists()] == []
    finally:
        successor.stop()
