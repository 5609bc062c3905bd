"""TEST DOUBLE of a Helm chart repository: no chart repository can be reached from this machine.

`ChartRepo.serve({"ingress-nginx": "4.13.3", ...}, workdir)` packages ONE generic stand-in
chart (tests/standin_chart/) under each name and version asked for -- Chart.yaml rewritten in
a temporary copy, `helm package`, `helm repo index` -- and serves index.yaml and the archives
over HTTP on 127.0.0.1. The stand-in installs nothing an upstream chart does: it renders the
values it was given into a ConfigMap `<release>-standin-values` (data `values.json`), so a
test can assert what a role passed to the chart. The roles install for real from the
upstream repositories in the online tier (rung L4).

    with ChartRepo.serve({"dapr": "1.16.5"}, tmp_path) as repo:
        ...  # helm upgrade --install dapr dapr --repo repo.url --version 1.16.5
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import yaml

from testkit.controlplane import toolchain

ROOT = Path(__file__).resolve().parent.parent
STANDIN_CHART = ROOT / "tests" / "standin_chart"
HELM = ROOT / ".tools" / "bin" / "helm"
# Charts versioned like the project's release, whose one pin they share: cert-manager's chart
# versions carry the release's leading "v" (v1.19.1), Dapr's do not (1.16.5).
RELEASE_PINNED_CHARTS = {"cert-manager": ("CERT_MANAGER_VERSION", "v"), "dapr": ("DAPR_VERSION", "")}


def pinned_charts() -> dict[str, str]:
    """Every chart pinned in versions.env: keys ending in _CHART_VERSION (INGRESS_NGINX_CHART_VERSION
    -> ingress-nginx), plus cert-manager and dapr whose charts share their release's pin."""
    pins = toolchain.read_versions()
    charts = {
        key.removesuffix("_CHART_VERSION").lower().replace("_", "-"): value
        for key, value in pins.items()
        if key.endswith("_CHART_VERSION")
    }
    for chart, (key, prefix) in RELEASE_PINNED_CHARTS.items():
        charts[chart] = prefix + pins[key].removeprefix("v")
    return charts


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        """No per-request log lines on the test's stderr."""


class ChartRepo:
    """A served stand-in chart repository; `url` ends with a slash. Stop with stop() or `with`."""

    def __init__(self, root: Path, server: ThreadingHTTPServer, thread: threading.Thread):
        self.root = root
        self._server = server
        self._thread = thread
        self.url = f"http://127.0.0.1:{server.server_port}/"

    @classmethod
    def serve(cls, charts: dict[str, str], workdir: Path) -> ChartRepo:
        """Package the stand-in chart as each {name: version} and serve the repository."""
        workdir = Path(workdir)
        root = workdir / "chart-repo"
        build = workdir / "chart-build"
        for path in (root, build):
            shutil.rmtree(path, ignore_errors=True)
            path.mkdir(parents=True)
        env = {
            **os.environ,
            "HELM_CACHE_HOME": str(workdir / "helm" / "cache"),
            "HELM_CONFIG_HOME": str(workdir / "helm" / "config"),
            "HELM_DATA_HOME": str(workdir / "helm" / "data"),
        }
        for name, version in charts.items():
            chart = build / name / name
            shutil.copytree(STANDIN_CHART, chart)
            meta = yaml.safe_load((chart / "Chart.yaml").read_text())
            meta.update(
                name=name,
                version=version,
                description=f"TEST DOUBLE for the upstream {name} chart {version}: values in a ConfigMap.",
            )
            (chart / "Chart.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))
            _helm(env, "package", str(chart), "--destination", str(root))
        _helm(env, "repo", "index", str(root))
        server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(root)))
        thread = threading.Thread(target=server.serve_forever, name="chart-repo", daemon=True)
        thread.start()
        return cls(root, server, thread)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def __enter__(self) -> ChartRepo:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _helm(env: dict[str, str], *args: str) -> None:
    proc = subprocess.run([str(HELM), *args], env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"helm {' '.join(args)} failed: {proc.stderr.strip()}")
