"""ONLINE (rung L4): roles/cluster against DigitalOcean itself, the Molecule scenario
extensions/molecule/cluster_doks_online: a real one-node DOKS cluster is created, adopted by a
second run that changes nothing, reached through the written kubeconfig, and deleted. Runs
only in GitHub Actions (`pytest -m online`), with DIGITALOCEAN_ACCESS_TOKEN set; it bills a
few cents to the account."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.online

ROOT = Path(__file__).resolve().parents[2]
COLLECTION = ROOT / "collections" / "ansible_collections" / "todo" / "cloud"


def test_L4_cluster_doks_online_scenario(tmp_path):
    assert os.environ.get("DIGITALOCEAN_ACCESS_TOKEN"), (
        "the online tier needs DIGITALOCEAN_ACCESS_TOKEN (a read/write DigitalOcean API token)"
    )
    env = {
        **os.environ,
        "TODO_REPO_ROOT": str(ROOT),
        "MOLECULE_EPHEMERAL_DIRECTORY": str(tmp_path / "molecule"),
        "ANSIBLE_NOCOLOR": "1",
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    log = ROOT / "artifacts" / "molecule" / "cluster_doks_online.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        proc = subprocess.run(
            [str(Path(sys.executable).parent / "molecule"), "test", "-s", "cluster_doks_online"],
            cwd=COLLECTION,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=2400,
            check=False,
        )
    assert proc.returncode == 0, log.read_text()[-6000:]
