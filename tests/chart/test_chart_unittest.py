"""charts/todo's helm-unittest suites (charts/todo/tests/*_test.yaml), run as the Helm plugin
`helm unittest` (rung L0). The plugin is the helm-unittest binary built from the pinned Go
module (scripts/toolchain.py), registered through a plugin folder given in HELM_PLUGINS."""

from __future__ import annotations

import os
import re
import subprocess

import pytest
from chartlib import BIN, CHART, HELM, read_versions

pytestmark = pytest.mark.unit


def plugin_folder(tmp_path):
    """A Helm plugins folder holding `unittest`, pointing at the pinned binary."""
    plugin = tmp_path / "plugins" / "unittest"
    plugin.mkdir(parents=True)
    version = read_versions()["HELM_UNITTEST_VERSION"].removeprefix("v")
    (plugin / "plugin.yaml").write_text(
        "name: unittest\n"
        f"version: {version}\n"
        "usage: unit test for helm charts\n"
        "description: helm-unittest built from the pinned Go module\n"
        f"command: {BIN / 'helm-unittest'}\n"
    )
    return plugin.parent


def test_helm_unittest_suites_pass(tmp_path):
    env = {**os.environ, "HELM_PLUGINS": str(plugin_folder(tmp_path))}
    result = subprocess.run(
        [str(HELM), "unittest", "--color=false", str(CHART)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    suites = int(re.search(r"^Test Suites:\s+(\d+) passed, (\d+) total", result.stdout, re.M).group(2))
    passed, total = map(int, re.search(r"^Tests:\s+(\d+) passed, (\d+) total", result.stdout, re.M).groups())
    assert suites == len(list((CHART / "tests").glob("*_test.yaml"))) >= 7
    assert passed == total >= 70, f"{passed} of {total} helm-unittest cases passed"
