"""The Molecule scenarios of the todo.cloud collection (extensions/molecule/), each run with
`molecule test` against the control-plane fixture: real kube-apiserver, controllers and
scheduler, pods simulated by kwok (rung L2). A scenario's own playbooks say what it proves."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
COLLECTION = ROOT / "collections" / "ansible_collections" / "todo" / "cloud"
# Scenarios named *_online need the real cloud: tests/cluster/test_cluster_online.py runs them (online tier).
SCENARIOS = sorted(
    p.parent.name
    for p in (COLLECTION / "extensions" / "molecule").glob("*/molecule.yml")
    if not p.parent.name.endswith("_online")
)


def test_every_scenario_is_collected():
    assert SCENARIOS == ["app", "cluster_doks", "monitoring", "platform", "policy", "recovery"]


def _start(scenario: str, controlplane, chart_repo, workdir: Path) -> tuple[subprocess.Popen, Path]:
    env = {
        **os.environ,
        "TODO_REPO_ROOT": str(ROOT),
        "TODO_MOLECULE_KUBECONFIG": str(controlplane.kubeconfig_path),
        "TODO_MOLECULE_CONTEXT": controlplane.context,
        "TODO_MOLECULE_NAMESPACE": f"mol-{scenario}-{uuid.uuid4().hex[:6]}",
        # TEST DOUBLE of the Helm chart repositories (testkit/chart_repo.py): every pinned chart.
        "TODO_MOLECULE_CHART_REPO": chart_repo.url,
        "MOLECULE_EPHEMERAL_DIRECTORY": str(workdir / "molecule"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "NO_COLOR": "1",
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    log = ROOT / "artifacts" / "molecule" / f"{scenario}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "molecule"), "test", "-s", scenario],
            cwd=COLLECTION,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return proc, log


@pytest.fixture(scope="module")
def scenario_runs(request, controlplane, chart_repo, tmp_path_factory):
    """The selected scenarios started at once, each in its own namespace on the shared control
    plane: they spend most of their time waiting for the controllers, so together they take
    little longer than the slowest alone (CI's shards select one each). Logs:
    artifacts/molecule/<scenario>.log."""
    selected = [
        item.callspec.params["scenario"]
        for item in request.session.items
        if item.module is request.module and item.originalname == "test_scenario"
    ]
    runs = {name: _start(name, controlplane, chart_repo, tmp_path_factory.mktemp(name)) for name in selected}
    yield runs
    for proc, _ in runs.values():
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)


@pytest.mark.timeout(1800)
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_scenario(scenario, scenario_runs):
    proc, log = scenario_runs[scenario]
    returncode = proc.wait(timeout=1500)
    output = log.read_text()
    assert returncode == 0, output[-6000:]
