#!/usr/bin/env python3
"""Build the project's Go tools at the versions pinned in versions.env.

Each tool is a small Go module under tools/<name>/ (go.mod is its lock file).
Binaries are cached outside the clone, keyed by the tool's go.mod, go.sum and link
flags, so every clone on this machine (CI's included) reuses them; the clone gets
symlinks in .tools/bin. A run that finds everything cached builds nothing and says so.

Usage: scripts/toolchain.py [--list] [TOOL ...]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOOLS_DIR = ROOT / "tools"
LINK_DIR = ROOT / ".tools" / "bin"


def read_versions(path: Path = ROOT / "versions.env") -> dict[str, str]:
    versions = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            versions[key.strip()] = value.strip()
    return versions


def cache_root() -> Path:
    base = os.environ.get("TODO_CLOUD_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "todo-cloud"
    )
    return Path(base)


@dataclass(frozen=True)
class Tool:
    name: str  # folder under tools/
    version_key: str  # key in versions.env
    packages: dict[str, str]  # binary name -> Go package
    ldflags: tuple[str, ...] = ()

    def flags(self, versions: dict[str, str]) -> list[str]:
        # {KEY} is the pin as written (v1.16.5), {KEY_NUMBER} the same without the "v".
        numbers = {f"{key}_NUMBER": value.removeprefix("v") for key, value in versions.items()}
        return [f.format(**versions, **numbers) for f in self.ldflags]


K8S_LDFLAGS = (
    "-X k8s.io/component-base/version.gitVersion={KUBERNETES_VERSION}",
    "-X k8s.io/component-base/version.gitTreeState=clean",
    "-X k8s.io/client-go/pkg/version.gitVersion={KUBERNETES_VERSION}",
)

TOOLS = [
    Tool(
        "helm",
        "HELM_VERSION",
        {"helm": "helm.sh/helm/v3/cmd/helm"},
        ("-X helm.sh/helm/v3/internal/version.version={HELM_VERSION}",),
    ),
    Tool(
        "kubeconform", "KUBECONFORM_VERSION", {"kubeconform": "github.com/yannh/kubeconform/cmd/kubeconform"}
    ),
    # kube-linter's module (golang.stackrox.io/kube-linter) is not served by the Go module
    # proxy here; kube-score does the same job (best-practice checks on rendered manifests).
    Tool(
        "kube-score",
        "KUBE_SCORE_VERSION",
        {"kube-score": "github.com/zegl/kube-score/cmd/kube-score"},
        ("-X main.version={KUBE_SCORE_VERSION}",),
    ),
    Tool(
        "gitleaks",
        "GITLEAKS_VERSION",
        {"gitleaks": "github.com/zricethezav/gitleaks/v8"},
        ("-X github.com/zricethezav/gitleaks/v8/version.Version={GITLEAKS_VERSION}",),
    ),
    Tool("actionlint", "ACTIONLINT_VERSION", {"actionlint": "github.com/rhysd/actionlint/cmd/actionlint"}),
    Tool(
        "helm-unittest",
        "HELM_UNITTEST_VERSION",
        {"helm-unittest": "github.com/helm-unittest/helm-unittest/cmd/helm-unittest"},
    ),
    Tool(
        "controller-gen",
        "CONTROLLER_GEN_VERSION",
        {"controller-gen": "sigs.k8s.io/controller-tools/cmd/controller-gen"},
    ),
    Tool(
        "kwok",
        "KWOK_VERSION",
        {"kwok": "sigs.k8s.io/kwok/cmd/kwok"},
        ("-X sigs.k8s.io/kwok/pkg/consts.Version={KWOK_VERSION}",),
    ),
    Tool("etcd", "ETCD_VERSION", {"etcd": "go.etcd.io/etcd/server/v3"}),
    # daprd with only the components the project uses (tools/dapr/daprd: upstream's daprd
    # minus cmd/daprd/components, which links in all ~130), and the scheduler (Jobs API).
    Tool(
        "dapr",
        "DAPR_VERSION",
        {"daprd": "todo-cloud/tools/dapr/daprd", "scheduler": "github.com/dapr/dapr/cmd/scheduler"},
        (
            "-X github.com/dapr/dapr/pkg/buildinfo.version={DAPR_VERSION_NUMBER}",
            "-X github.com/dapr/dapr/pkg/buildinfo.gitversion={DAPR_VERSION}",
            "-X github.com/dapr/kit/logger.DaprVersion={DAPR_VERSION_NUMBER}",
        ),
    ),
    Tool(
        "kubernetes",
        "KUBERNETES_VERSION",
        {
            name: f"k8s.io/kubernetes/cmd/{name}"
            for name in (
                "kube-apiserver",
                "kube-controller-manager",
                "kube-scheduler",
                "kubelet",
                "kube-proxy",
            )
        },
        K8S_LDFLAGS,
    ),
    # The local single-node cluster's add-ons (testkit/node.py): cluster DNS and the metrics API.
    Tool("coredns", "COREDNS_VERSION", {"coredns": "github.com/coredns/coredns"}),
    Tool(
        "metrics-server",
        "METRICS_SERVER_VERSION",
        {"metrics-server": "sigs.k8s.io/metrics-server/cmd/metrics-server"},
        (
            "-X k8s.io/client-go/pkg/version.gitVersion={METRICS_SERVER_VERSION}",
            "-X k8s.io/client-go/pkg/version.gitTreeState=clean",
        ),
    ),
]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, ValueError):
        return False
    except PermissionError:
        return True
    return pid > 0


def tool_key(tool: Tool, versions: dict[str, str]) -> str:
    digest = hashlib.sha256()
    for name in ("go.mod", "go.sum"):
        digest.update((TOOLS_DIR / tool.name / name).read_bytes())
    digest.update(" ".join(tool.flags(versions)).encode())
    digest.update(repr(sorted(tool.packages.items())).encode())
    for source in sorted((TOOLS_DIR / tool.name).glob("*/*.go")):  # a main of the tool's own
        digest.update(f"{source.parent.name}/{source.name}".encode())
        digest.update(source.read_bytes())
    return f"{tool.name}-{versions[tool.version_key]}-{digest.hexdigest()[:12]}"


def ensure(tool: Tool, versions: dict[str, str]) -> bool:
    """Make the tool's binaries available; return True when something was built."""
    target = cache_root() / "bin" / tool_key(tool, versions)
    built = False
    if not all((target / b).is_file() for b in tool.packages):
        started = time.monotonic()
        print(
            f"toolchain: building {tool.name} {versions[tool.version_key]} "
            f"({', '.join(tool.packages)}); the first build takes minutes ...",
            flush=True,
        )
        staging = target.with_name(target.name + f".tmp{os.getpid()}")
        for stale in target.parent.glob(target.name + ".tmp*"):
            if not _pid_alive(int(stale.suffix[4:] or 0)):
                shutil.rmtree(stale, ignore_errors=True)
        staging.mkdir(parents=True)
        ldflags = " ".join(["-s", "-w", *tool.flags(versions)])
        # One `go build` per tool shares the compile work of its binaries; with several
        # packages Go names each binary after its folder, which our names follow.
        (binary, _package), *more = tool.packages.items()
        output = str(staging / binary) if not more else str(staging) + "/"
        cmd = ["go", "build", "-trimpath", "-ldflags", ldflags, "-o", output, *tool.packages.values()]
        env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-mod=mod"}
        subprocess.run(cmd, cwd=TOOLS_DIR / tool.name, env=env, check=True)
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
        built = True
        print(f"toolchain: built {tool.name} in {time.monotonic() - started:.0f}s", flush=True)
    LINK_DIR.mkdir(parents=True, exist_ok=True)
    for binary in tool.packages:
        link = LINK_DIR / binary
        if link.is_symlink() or link.exists():
            if os.readlink(link) == str(target / binary):
                continue
            link.unlink()
        link.symlink_to(target / binary)
    return built


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tools", nargs="*", help="tools to build (default: all)")
    parser.add_argument("--list", action="store_true", help="print the tools and their versions")
    args = parser.parse_args()
    versions = read_versions()
    if args.list:
        for tool in TOOLS:
            print(f"{tool.name:16} {versions[tool.version_key]:10} {' '.join(tool.packages)}")
        return 0
    wanted = set(args.tools) or {t.name for t in TOOLS}
    unknown = wanted - {t.name for t in TOOLS}
    if unknown:
        parser.error(f"unknown tool(s): {', '.join(sorted(unknown))}")
    built = [t.name for t in TOOLS if t.name in wanted and ensure(t, versions)]
    cached = len(wanted) - len(built)
    print(
        f"toolchain: {len(built)} built{' (' + ', '.join(built) + ')' if built else ''}, "
        f"{cached} cached in {cache_root() / 'bin'}",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except subprocess.CalledProcessError as exc:
        print(
            f"toolchain: build failed: {' '.join(exc.cmd[:2])} ... (exit {exc.returncode})", file=sys.stderr
        )
        sys.exit(1)
