"""A cluster whose owner was killed is removed, and nothing of it is left behind, by the next
start (rung L3): no process, no mount under its state folder, no network namespace or veth of
its pods, no bridge, no iptables rule of kube-proxy, kubelet or its CNI network, no cgroup, no
folder. (`make down` after the whole app is checked the same way: tests/e2e/test_teardown.py.)
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from testkit.node import PREFIX, leftovers, node_processes

pytestmark = pytest.mark.cluster
ROOT = Path(__file__).resolve().parents[2]


KILLED_OWNER = """
import sys, time
from testkit.node import LocalCluster
cluster = LocalCluster.create()
cluster.start(wait=300)
print(f"workdir={cluster.workdir}", flush=True)
time.sleep(3600)
"""


def test_l3_a_killed_owner_leaves_nothing_after_the_next_start():
    """SIGKILL the process that started a cluster (a cancelled test run): the daemons live on,
    and the next `LocalCluster.create()` removes all of it before anything else."""
    from testkit.node import LocalCluster

    owner = subprocess.Popen(
        [sys.executable, "-c", KILLED_OWNER],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert owner.stdout is not None
        said = []  # on a cold machine the start builds images first, and says so
        for line in owner.stdout:
            said.append(line)
            if line.startswith("workdir="):
                break
        workdir = Path(said[-1].removeprefix("workdir=").strip() if said else "")
        assert workdir.name.startswith(PREFIX) and workdir.is_dir(), f"the cluster started: {''.join(said)}"
        assert node_processes(workdir)
    finally:
        owner.kill()
        owner.wait()
    assert node_processes(workdir), "its daemons outlive it"
    successor = LocalCluster.create()  # sweeps the orphan; started or not, it owns a new folder
    try:
        assert leftovers(workdir) == []
    finally:
        successor.stop()
