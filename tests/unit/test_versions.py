"""versions.env is the one place versions are pinned; the lock files must follow it (rung L0)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from testkit.controlplane import toolchain

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.unit
VERSIONS = toolchain.read_versions()


def go_requires(folder: Path) -> dict[str, str]:
    text = (folder / "go.mod").read_text()
    return dict(re.findall(r"^\s*(?:require\s+)?([\w./-]+\.[\w./-]+)\s+(v[\w.+-]+)(?:\s+//.*)?$", text, re.M))


@pytest.mark.parametrize("tool", toolchain.TOOLS, ids=lambda t: t.name)
def test_each_tool_module_requires_the_pinned_version(tool):
    folder = toolchain.TOOLS_DIR / tool.name
    requires = go_requires(folder)
    own = re.search(r"^module\s+(\S+)", (folder / "go.mod").read_text(), re.M).group(1)
    # the first package built from the pinned module (tools/dapr also builds a main of its own)
    package = next(p for p in tool.packages.values() if not p.startswith(own + "/"))
    module = max((m for m in requires if package == m or package.startswith(m + "/")), key=len)
    assert requires[module] == VERSIONS[tool.version_key], f"tools/{tool.name}/go.mod: {module}"


def test_kubernetes_staging_modules_follow_the_kubernetes_version():
    text = (toolchain.TOOLS_DIR / "kubernetes" / "go.mod").read_text()
    replaced = re.findall(r"^\s+(k8s\.io/[\w-]+) => \1 (v[\d.]+)$", text, re.M)
    assert len(replaced) == 31
    minor_patch = VERSIONS["KUBERNETES_VERSION"].removeprefix("v1.")
    assert {v for _, v in replaced} == {f"v0.{minor_patch}"}


@pytest.mark.parametrize(
    ("key", "module"),
    [
        ("DAPR_VERSION", "github.com/dapr/dapr"),
        ("CERT_MANAGER_VERSION", "github.com/cert-manager/cert-manager"),
        (
            "PROMETHEUS_OPERATOR_VERSION",
            "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring",
        ),
    ],
)
def test_crd_sources_follow_versions_env(key, module):
    assert go_requires(toolchain.TOOLS_DIR / "crds")[module] == VERSIONS[key]


def test_every_pin_is_used_somewhere():
    """A pin nobody reads is a lie about what the project runs."""
    haystack = "".join(
        p.read_text(errors="ignore")
        for p in [
            ROOT / "Makefile",
            *(p for p in (ROOT / "scripts").iterdir() if p.is_file()),
            *(ROOT / "collections/ansible_collections/todo/cloud/roles").rglob("*.yml"),
        ]
    )
    unused = [k for k in VERSIONS if k not in haystack]
    assert unused == []
