"""Last in the suite (files run in name order): `make down` removes the cluster `make up` made,
with the whole app on it, and nothing is left behind (rung L3): no process, no mount under its
state folder, no pod network namespace or veth, no bridge, no iptables rule of kube-proxy,
kubelet or the CNI network, no cgroup, no folder. The package fixture's own teardown then
finds nothing to do (with TODO_E2E_KEEP=1, deselect this test to keep the cluster)."""

from __future__ import annotations

from pathlib import Path

import pytest

from testkit.node import leftovers, status

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]


def test_l3_make_down_removes_the_cluster_and_leaves_nothing_behind(local_app):
    workdir = Path(status()["dir"])
    running = leftovers(workdir)
    assert any(line.startswith("network namespace") for line in running), "the app's pods have some"
    assert any(line.startswith("iptables") for line in running), "kube-proxy wrote its rules"
    assert any(line.startswith("mount") for line in running), "the pods' volumes are mounted"

    down = local_app.down()
    assert down.rc == 0, down.output
    assert down.stats()["changed"] == 1, down.output
    assert not status()["running"]
    assert leftovers(workdir) == []
