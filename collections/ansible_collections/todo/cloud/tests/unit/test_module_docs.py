"""Every module's DOCUMENTATION renders with ansible-doc and matches its argument_spec (rung L0)."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[6]
MODULES = sorted(
    p.stem for p in (ROOT / "collections/ansible_collections/todo/cloud/plugins/modules").glob("*.py")
)


def ansible_doc(module: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}
    return subprocess.run(
        [str(Path(sys.executable).parent / "ansible-doc"), *args, f"todo.cloud.{module}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def compare(spec: dict, documented: dict, where: str = "") -> list[str]:
    diffs = []
    if set(spec) != set(documented):
        diffs.append(
            f"{where}: argument_spec {sorted(set(spec) - set(documented))} not documented, "
            f"documented {sorted(set(documented) - set(spec))} not in argument_spec"
        )
    for name in set(spec) & set(documented):
        arg, doc = spec[name], documented[name]
        for attr, default in (
            ("type", "str"),
            ("required", False),
            ("default", None),
            ("elements", None),
            ("choices", None),
            ("aliases", None),
        ):
            if arg.get(attr, default) != doc.get(attr, default):
                diffs.append(f"{where}{name}.{attr}: spec {arg.get(attr)!r} != doc {doc.get(attr)!r}")
        if arg.get("options") or doc.get("suboptions"):
            diffs += compare(arg.get("options") or {}, doc.get("suboptions") or {}, f"{where}{name}.")
    return diffs


def test_both_modules_exist():
    assert MODULES == ["deploy_lock", "rollout_wait", "secret_assert", "service_check"]


@pytest.mark.parametrize("module", MODULES)
def test_ansible_doc_renders(module):
    proc = ansible_doc(module)
    assert proc.returncode == 0, proc.stderr
    assert "[WARNING]" not in proc.stderr
    for section in ("OPTIONS", "EXAMPLES", "RETURN VALUES", "kubeconfig", "namespace"):
        assert section in proc.stdout, section


@pytest.mark.parametrize("module", MODULES)
def test_documentation_matches_the_argument_spec(module):
    code = importlib.import_module(f"ansible_collections.todo.cloud.plugins.modules.{module}")
    proc = ansible_doc(module, "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)[f"todo.cloud.{module}"]
    assert compare(code.ARGUMENT_SPEC, doc["doc"]["options"]) == []
    assert doc["examples"].strip() and doc["return"]
