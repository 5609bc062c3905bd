#!/usr/bin/env python3
"""Generate the Dapr, cert-manager and prometheus-operator CRDs from their Go API types.

The API packages are pinned by the Go module tools/crds/ (go.mod is the lock file
that follows versions.env); controller-gen reads their Go types and markers and
writes one CustomResourceDefinition per file. Nothing is copied from the projects'
own YAML. The output is cached outside the clone, keyed by tools/crds/go.mod,
go.sum, controller-gen's build and the generator options, so a second run
regenerates nothing and says so. The output folder's path is the last line of stdout.

Usage: scripts/gen_crds.py [--force]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from toolchain import LINK_DIR, ROOT, TOOLS, cache_root, ensure, read_versions, tool_key

MODULE_DIR = ROOT / "tools" / "crds"

# The Go packages whose types become CRDs (every one is imported by tools/crds/tools.go).
PACKAGES = (
    "github.com/dapr/dapr/pkg/apis/components/v1alpha1",
    "github.com/dapr/dapr/pkg/apis/configuration/v1alpha1",
    "github.com/dapr/dapr/pkg/apis/resiliency/v1alpha1",
    "github.com/dapr/dapr/pkg/apis/subscriptions/v1alpha1",
    "github.com/dapr/dapr/pkg/apis/subscriptions/v2alpha1",
    "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1",
    "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1",
)

# maxDescLen=0 drops the field descriptions: the prometheus-operator CRDs shrink from
# megabytes to a few hundred kB, and the API server has less to parse on every apply.
GENERATOR = "crd:crdVersions=v1,maxDescLen=0"


@dataclass(frozen=True)
class Expected:
    group: str
    plural: str
    kind: str
    scope: str
    versions: tuple[str, ...]  # all served
    storage: str

    @property
    def name(self) -> str:
        return f"{self.plural}.{self.group}"

    @property
    def filename(self) -> str:  # controller-gen's naming: <group>_<plural>.yaml
        return f"{self.group}_{self.plural}.yaml"


# The CRDs the project relies on, as the projects' own installs define them.
EXPECTED = (
    Expected("dapr.io", "components", "Component", "Namespaced", ("v1alpha1",), "v1alpha1"),
    Expected("dapr.io", "configurations", "Configuration", "Namespaced", ("v1alpha1",), "v1alpha1"),
    Expected("dapr.io", "resiliencies", "Resiliency", "Namespaced", ("v1alpha1",), "v1alpha1"),
    Expected("dapr.io", "subscriptions", "Subscription", "Namespaced", ("v1alpha1", "v2alpha1"), "v2alpha1"),
    Expected("cert-manager.io", "certificates", "Certificate", "Namespaced", ("v1",), "v1"),
    Expected("cert-manager.io", "issuers", "Issuer", "Namespaced", ("v1",), "v1"),
    Expected("cert-manager.io", "clusterissuers", "ClusterIssuer", "Cluster", ("v1",), "v1"),
    Expected("monitoring.coreos.com", "servicemonitors", "ServiceMonitor", "Namespaced", ("v1",), "v1"),
    Expected("monitoring.coreos.com", "podmonitors", "PodMonitor", "Namespaced", ("v1",), "v1"),
    Expected("monitoring.coreos.com", "prometheusrules", "PrometheusRule", "Namespaced", ("v1",), "v1"),
)


# go.mod requirement -> the versions.env key that pins it.
PINS = {
    "github.com/dapr/dapr": "DAPR_VERSION",
    "github.com/cert-manager/cert-manager": "CERT_MANAGER_VERSION",
    "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring": "PROMETHEUS_OPERATOR_VERSION",
}


def say(message: str) -> None:
    print(f"crds: {message}", flush=True)


def controller_gen_tool():
    return next(t for t in TOOLS if t.name == "controller-gen")


def cache_key(versions: dict[str, str]) -> str:
    digest = hashlib.sha256()
    for name in ("go.mod", "go.sum"):
        digest.update((MODULE_DIR / name).read_bytes())
    digest.update(tool_key(controller_gen_tool(), versions).encode())
    digest.update(GENERATOR.encode())
    digest.update(repr(PACKAGES).encode())
    return digest.hexdigest()[:16]


def check_pins(versions: dict[str, str]) -> list[str]:
    """tools/crds/go.mod must require exactly the versions pinned in versions.env."""
    gomod = (MODULE_DIR / "go.mod").read_text()
    problems = []
    for module, key in PINS.items():
        match = re.search(rf"^\s*(?:require\s+)?{re.escape(module)} (\S+)", gomod, re.MULTILINE)
        found = match.group(1) if match else None
        if found != versions[key]:
            problems.append(
                f"tools/crds/go.mod requires {module} {found}, versions.env "
                f"pins {key}={versions[key]} (run go get {module}@{versions[key]} "
                "&& go mod tidy in tools/crds)"
            )
    return problems


# --- checking the output ------------------------------------------------------------
# controller-gen writes sorted, 2-space-indented YAML (sigs.k8s.io/yaml), so the few
# top-level fields checked here sit at fixed indents and plain text matching suffices
# (no PyYAML in the system Python).


def summarize(text: str) -> dict:
    def one(pattern: str) -> str | None:
        match = re.search(pattern, text, re.MULTILINE)
        return match.group(1) if match else None

    versions = []  # (name, served, storage) per entry of spec.versions
    block = text.split("\n  versions:\n", 1)[1] if "\n  versions:\n" in text else ""
    for entry in re.split(r"^  - ", block, flags=re.MULTILINE)[1:]:
        name = re.search(r"(?:\A|^    )name: (\S+)$", entry, re.MULTILINE)
        served = re.search(r"^    served: (\w+)$", entry, re.MULTILINE)
        storage = re.search(r"^    storage: (\w+)$", entry, re.MULTILINE)
        versions.append(
            (
                name.group(1) if name else "?",
                served and served.group(1) == "true",
                storage and storage.group(1) == "true",
            )
        )
    return {
        "name": one(r"^  name: (\S+)$"),
        "group": one(r"^  group: (\S+)$"),
        "kind": one(r"^    kind: (\S+)$"),
        "scope": one(r"^  scope: (\S+)$"),
        "versions": versions,
    }


def check(out: Path) -> list[str]:
    problems = []
    for want in EXPECTED:
        path = out / want.filename
        if not path.is_file():
            problems.append(f"{want.name}: {want.filename} was not generated")
            continue
        got = summarize(path.read_text())
        for field in ("name", "group", "kind", "scope"):
            if got[field] != getattr(want, field):
                problems.append(f"{want.name}: {field} is {got[field]!r}, want {getattr(want, field)!r}")
        served = tuple(sorted(v for v, s, _ in got["versions"] if s))
        storage = [v for v, _, st in got["versions"] if st]
        if served != tuple(sorted(want.versions)):
            problems.append(f"{want.name}: serves {served}, want {want.versions}")
        if storage != [want.storage]:
            problems.append(f"{want.name}: storage version {storage}, want [{want.storage!r}]")
    return problems


def describe(out: Path) -> list[str]:
    lines = []
    for path in sorted(out.glob("*.yaml")):
        got = summarize(path.read_text())
        versions = ",".join(v + ("*" if st else "") for v, _, st in got["versions"])
        lines.append(f"  {got['name']:42} {got['kind']:20} {got['scope']:10} {versions}")
    return lines


# --- generating -----------------------------------------------------------------------


def generate(target: Path, controller_gen: Path) -> None:
    staging = target.with_name(target.name + f".tmp{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        cmd = [
            str(controller_gen),
            GENERATOR,
            *(f"paths={p}" for p in PACKAGES),
            f"output:crd:artifacts:config={staging}",
        ]
        # cwd is the pinning module, so the import paths resolve at its versions; the
        # first run downloads the modules' sources through the Go module proxy.
        env = {**os.environ, "GOWORK": "off"}
        subprocess.run(cmd, cwd=MODULE_DIR, env=env, check=True)
        problems = check(staging)
        if problems:
            raise SystemExit("crds: the generated CRDs are not as expected:\n  " + "\n  ".join(problems))
        try:
            staging.rename(target)
        except OSError:
            if not target.is_dir():  # not a concurrent run that finished first
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="regenerate even when cached")
    args = parser.parse_args()
    versions = read_versions()
    drift = check_pins(versions)
    if drift:
        raise SystemExit("crds: " + "\n  ".join(drift))
    target = cache_root() / "crds" / cache_key(versions)
    if args.force:
        shutil.rmtree(target, ignore_errors=True)
    if target.is_dir():
        say(f"cached in {target}")
    else:
        started = time.monotonic()
        ensure(controller_gen_tool(), versions)  # builds controller-gen only if missing
        say(
            f"generating CRDs from Dapr {versions['DAPR_VERSION']}, cert-manager "
            f"{versions['CERT_MANAGER_VERSION']}, prometheus-operator "
            f"{versions['PROMETHEUS_OPERATOR_VERSION']} with controller-gen "
            f"{versions['CONTROLLER_GEN_VERSION']} ..."
        )
        target.parent.mkdir(parents=True, exist_ok=True)
        generate(target, LINK_DIR / "controller-gen")
        files = describe(target)
        say(f"generated {len(files)} CRDs in {time.monotonic() - started:.0f}s (* = storage version):")
        print("\n".join(files), flush=True)
    print(target, flush=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except subprocess.CalledProcessError as exc:
        print(f"crds: {Path(exc.cmd[0]).name} failed (exit {exc.returncode})", file=sys.stderr)
        sys.exit(1)
