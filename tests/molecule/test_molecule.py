"""The Molecule scenarios of the todo.cloud collection (extensions/molecule/), each run with
`molecule test` against the control-plane fixture: real kube-apiserver, controllers and
scheduler, pods simulated by kwok (rung L2). A scenario's own playbooks say what it proves."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
COLLECTION = ROOT / "collections" / "ansible_collections" / "todo" / "cloud"
SCENARIOS = sorted(p.parent.name for p in (COLLECTION / "extensions" / "molecule").glob("*/molecule.yml"))


def test_every_scenario_is_collected():
    assert SCENARIOS == ["app", "recovery", "rollback"]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_scenario(scenario, controlplane, tmp_path):
    env = {
        **os.environ,
        "TODO_REPO_ROOT": str(ROOT),
        "TODO_MOLECULE_KUBECONFIG": str(controlplane.kubeconfig_path),
        "TODO_MOLECULE_CONTEXT": controlplane.context,
        "TODO_MOLECULE_NAMESPACE": f"mol-{scenario}-{uuid.uuid4().hex[:6]}",
        "MOLECULE_EPHEMERAL_DIRECTORY": str(tmp_path / "molecule"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "NO_COLOR": "1",
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "molecule"), "test", "-s", scenario],
        cwd=COLLECTION,
        env=env,
        capture_output=True,
        text=True,
        timeout=1500,
        check=False,
    )
    output = proc.stdout + proc.stderr
    (ROOT / "artifacts" / "molecule").mkdir(parents=True, exist_ok=True)
    (ROOT / "artifacts" / "molecule" / f"{scenario}.log").write_text(output)
    assert proc.returncode == 0, output[-6000:]
