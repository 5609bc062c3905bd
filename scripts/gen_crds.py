#!/usr/bin/env python3
"""Generate the Dapr, cert-manager and prometheus-operator CRDs from their Go API types.

The API packages are pinned by the Go module tools/crds/ (go.mod is the lock file that
follows versions.env; tests/unit/test_versions.py checks they agree). controller-gen reads
their Go types and markers and writes one CustomResourceDefinition per file: nothing is
copied from the projects' own YAML. The output is cached outside the clone, keyed by
tools/crds/go.mod, go.sum, controller-gen's build and the generator options, so a second
run regenerates nothing and says so. The output folder's path is the last line of stdout.
tests/integration/test_controlplane.py proves the result on a real API server.

Usage: scripts/gen_crds.py [--force]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import time
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


def cache_key(versions: dict[str, str]) -> str:
    controller_gen = next(t for t in TOOLS if t.name == "controller-gen")
    digest = hashlib.sha256()
    for name in ("go.mod", "go.sum"):
        digest.update((MODULE_DIR / name).read_bytes())
    digest.update(tool_key(controller_gen, versions).encode())
    digest.update(GENERATOR.encode())
    digest.update(repr(PACKAGES).encode())
    return digest.hexdigest()[:16]


def generate(target: Path) -> None:
    staging = target.with_name(target.name + f".tmp{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        cmd = [str(LINK_DIR / "controller-gen"), GENERATOR, *(f"paths={p}" for p in PACKAGES),
               f"output:crd:artifacts:config={staging}"]  # fmt: skip
        # cwd is the pinning module, so the import paths resolve at its versions; the
        # first run downloads the modules' sources through the Go module proxy.
        subprocess.run(cmd, cwd=MODULE_DIR, env={**os.environ, "GOWORK": "off"}, check=True)
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
    target = cache_root() / "crds" / cache_key(versions)
    if args.force:
        shutil.rmtree(target, ignore_errors=True)
    if target.is_dir():
        print(f"crds: cached in {target}", flush=True)
    else:
        started = time.monotonic()
        ensure(next(t for t in TOOLS if t.name == "controller-gen"), versions)
        pins = ("DAPR_VERSION", "CERT_MANAGER_VERSION", "PROMETHEUS_OPERATOR_VERSION")
        sources = ", ".join(f"{k.removesuffix('_VERSION').lower()} {versions[k]}" for k in pins)
        print(f"crds: generating from {sources} ...", flush=True)
        target.parent.mkdir(parents=True, exist_ok=True)
        generate(target)
        count = len(list(target.glob("*.yaml")))
        print(f"crds: generated {count} CRDs in {time.monotonic() - started:.0f}s", flush=True)
    print(target, flush=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except subprocess.CalledProcessError as exc:
        print(f"crds: {Path(exc.cmd[0]).name} failed (exit {exc.returncode})", file=sys.stderr)
        sys.exit(1)
