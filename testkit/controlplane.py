"""A real Kubernetes control plane on loopback, for tests (rungs L1 and L2).

etcd, kube-apiserver, kube-controller-manager and kube-scheduler run as real processes
built from the pinned Go modules (scripts/toolchain.py); kwok plays the kubelet for a
few simulated nodes with realistic allocatable CPU and memory, and moves pods through
the behaviours the tests choose (see testkit/kwok-stages.yaml). The CRDs the platform
uses (Dapr, cert-manager, prometheus-operator) are generated from those projects' Go
types (scripts/gen_crds.py) and installed with server-side apply.

    python -m testkit.controlplane up [--nodes N] [--dir DIR]   # prints the kubeconfig path
    python -m testkit.controlplane down --dir DIR

Everything lives in one temporary folder; `stop()` (also called on interpreter exit)
ends every process group it started.
"""

from __future__ import annotations

import argparse
import atexit
import base64
import json
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import toolchain
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from testkit.pki import PEM, server_pki
from testkit.procs import free_port, kill_groups, reap_orphans

ROOT = Path(__file__).resolve().parent.parent

STAGES_FILE = Path(__file__).with_name("kwok-stages.yaml")
FAKE_NODE_ANNOTATION = "kwok.x-k8s.io/node"
STATE_FILE = "state.json"


def make_pki(folder: Path, hosts: tuple[str, ...] = ()) -> None:
    """A CA (ca.key signs a real node's certificates), the API server's serving certificate
    (for 127.0.0.1 and `hosts`) and the service-account key pair."""
    names = ("127.0.0.1", "localhost", "kubernetes.default.svc", *hosts)
    server_pki("todo-test-ca", "kube-apiserver", names).write(
        folder, ca="ca.crt", cert="apiserver.crt", key="apiserver.key", ca_key="ca.key"
    )
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (folder / "sa.key").write_bytes(
        sa_key.private_bytes(PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    (folder / "sa.key").chmod(0o600)
    (folder / "sa.pub").write_bytes(
        sa_key.public_key().public_bytes(PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def kubeconfig(server: str, ca_pem: bytes, token: str, name: str = "todo-test") -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": name,
                "cluster": {
                    "server": server,
                    "certificate-authority-data": base64.b64encode(ca_pem).decode(),
                },
            }
        ],
        "users": [{"name": f"{name}-admin", "user": {"token": token}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": f"{name}-admin"}}],
        "current-context": name,
    }


@dataclass
class ControlPlane:
    """One running control plane. Use `start()` / `stop()`, or `with ControlPlane() as cp:`."""

    workdir: Path
    nodes: int = 1
    node_cpu: str = "4"
    node_memory: str = "8Gi"
    node_pods: str = "110"
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    crd_dir: Path | None = None
    detached: bool = False  # started by the CLI: lives on after this process, never reaped
    # A real node (testkit/node.py) instead of kwok's: no fake nodes, more names in the API
    # server's certificate, flags appended per component (the last of a flag wins), and a
    # hook that runs once the PKI exists, before etcd starts.
    kwok: bool = True
    apiserver_hosts: tuple[str, ...] = ()
    extra_args: dict[str, list[str]] = field(default_factory=dict)
    before_start: Callable[[ControlPlane], None] | None = None
    _owned_dir: bool = False

    @classmethod
    def create(cls, nodes: int = 1, parent: str | None = None) -> ControlPlane:
        shm = "/dev/shm"  # noqa: S108 - a private mkdtemp folder on tmpfs: etcd without disk waits
        base = parent or (shm if os.access(shm, os.W_OK) else None)
        reap_orphans(Path(base or tempfile.gettempdir()), "todo-cp-*")
        workdir = Path(tempfile.mkdtemp(prefix="todo-cp-", dir=base))
        return cls(workdir=workdir, nodes=nodes, _owned_dir=True)

    # -- paths ---------------------------------------------------------------------------
    @property
    def kubeconfig_path(self) -> Path:
        return self.workdir / "kubeconfig"

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.ports['apiserver']}"

    @property
    def context(self) -> str:
        return "todo-test"

    def __enter__(self) -> ControlPlane:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- lifecycle -------------------------------------------------------------------------
    def _spawn(self, name: str, argv: list[str]) -> None:
        log = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 (closed by the child's exit)
        self.processes[name] = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=self.workdir,
        )
        log.close()
        self.save_state()

    def _wait_http(
        self,
        name: str,
        url: str,
        timeout: float,
        context: ssl.SSLContext | None = None,
        headers: dict | None = None,
    ) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            proc = self.processes[name]
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{self.tail(name)}")
            try:
                req = urllib.request.Request(url, headers=headers or {})  # noqa: S310 - our own https URL
                with urllib.request.urlopen(req, timeout=2, context=context) as resp:  # noqa: S310 - as above
                    if resp.status == 200:
                        return
            except Exception as exc:
                last = str(exc)
            time.sleep(0.2)
        raise TimeoutError(f"{name} not ready after {timeout:.0f}s ({last}):\n{self.tail(name)}")

    def tail(self, name: str, lines: int = 30) -> str:
        path = self.workdir / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def start(self) -> ControlPlane:
        t0 = time.monotonic()
        toolchain_tools = ["etcd", "kubernetes", *(["kwok"] if self.kwok else [])]
        with open(os.devnull, "w") as quiet:
            subprocess.run(
                [sys.executable, str(ROOT / "scripts" / "toolchain.py"), *toolchain_tools],
                check=True,
                stdout=quiet,
            )
        crd = subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "gen_crds.py")],
            check=True,
            capture_output=True,
            text=True,
        )
        self.crd_dir = Path(crd.stdout.strip().splitlines()[-1])
        self.timings["tools"] = time.monotonic() - t0
        atexit.register(self.stop)
        bin_dir = toolchain.LINK_DIR
        for name in ("etcd", "etcd-peer", "apiserver", "controller-manager", "scheduler", "kwok"):
            self.ports[name] = free_port()
        make_pki(self.workdir, self.apiserver_hosts)
        token = base64.b32encode(os.urandom(20)).decode().lower()
        (self.workdir / "tokens.csv").write_text(f'{token},todo-admin,uid-admin,"system:masters"\n')
        ca_pem = (self.workdir / "ca.crt").read_bytes()
        self.kubeconfig_path.write_text(yaml.safe_dump(kubeconfig(self.server, ca_pem, token)))
        self.kubeconfig_path.chmod(0o600)
        if self.before_start:
            self.before_start(self)

        etcd_url = f"http://127.0.0.1:{self.ports['etcd']}"
        peer_url = f"http://127.0.0.1:{self.ports['etcd-peer']}"
        self._spawn(
            "etcd",
            [
                str(bin_dir / "etcd"),
                "--name=cp",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=cp={peer_url}",
                "--unsafe-no-fsync",
                "--log-level=warn",
                "--listen-metrics-urls=",
                "--quota-backend-bytes=2147483648",
            ],
        )
        self._wait_http("etcd", f"{etcd_url}/health", 30)
        self.timings["etcd"] = time.monotonic() - t0

        w = self.workdir
        self._spawn(
            "apiserver",
            [
                str(bin_dir / "kube-apiserver"),
                f"--etcd-servers={etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={self.ports['apiserver']}",
                f"--tls-cert-file={w / 'apiserver.crt'}",
                f"--tls-private-key-file={w / 'apiserver.key'}",
                f"--client-ca-file={w / 'ca.crt'}",
                f"--token-auth-file={w / 'tokens.csv'}",
                "--authorization-mode=Node,RBAC",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={w / 'sa.pub'}",
                f"--service-account-signing-key-file={w / 'sa.key'}",
                "--service-cluster-ip-range=10.96.0.0/16",
                "--allow-privileged=true",
                "--profiling=false",
                "--enable-priority-and-fairness=false",
                "--endpoint-reconciler-type=none",
                "--v=0",
                *self.extra_args.get("apiserver", []),
            ],
        )
        ctx = ssl.create_default_context(cafile=str(w / "ca.crt"))
        auth = {"Authorization": f"Bearer {token}"}
        self._wait_http("apiserver", f"{self.server}/readyz", 90, ctx, auth)
        self.timings["apiserver"] = time.monotonic() - t0

        kc = str(self.kubeconfig_path)
        common = [
            f"--kubeconfig={kc}",
            f"--authentication-kubeconfig={kc}",
            f"--authorization-kubeconfig={kc}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            "--profiling=false",
        ]
        self._spawn(
            "controller-manager",
            [
                str(bin_dir / "kube-controller-manager"),
                *common,
                f"--secure-port={self.ports['controller-manager']}",
                f"--service-account-private-key-file={w / 'sa.key'}",
                f"--root-ca-file={w / 'ca.crt'}",
                "--cluster-name=todo-test",
                "--controllers=*,-nodeipam,-cloud-node-lifecycle",
                "--horizontal-pod-autoscaler-sync-period=5s",
                "--node-monitor-grace-period=40s",
                *self.extra_args.get("controller-manager", []),
            ],
        )
        self._spawn(
            "scheduler",
            [str(bin_dir / "kube-scheduler"), *common, f"--secure-port={self.ports['scheduler']}"],
        )
        if self.kwok:
            self._spawn(
                "kwok",
                [
                    str(bin_dir / "kwok"),
                    f"--kubeconfig={kc}",
                    f"--config={STAGES_FILE}",
                    "--manage-all-nodes=false",
                    f"--manage-nodes-with-annotation-selector={FAKE_NODE_ANNOTATION}=fake",
                    "--node-ip=10.240.0.1",
                    "--cidr=10.244.0.0/16",
                    "--node-lease-duration-seconds=40",
                    f"--server-address=127.0.0.1:{self.ports['kwok']}",
                ],
            )
        self.apply_crds()
        self.timings["crds"] = time.monotonic() - t0
        if self.kwok:
            self.add_nodes(self.nodes)
        self._wait_ready()
        self.timings["ready"] = time.monotonic() - t0
        return self

    def kubectl_like_client(self):
        """A kubernetes.client ApiClient bound to this control plane."""
        from kubernetes import client, config

        return config.new_client_from_config(
            str(self.kubeconfig_path), context=self.context, persist_config=False
        ), client

    def apply_crds(self) -> None:
        api, client = self.kubectl_like_client()
        ext = client.ApiextensionsV1Api(api)
        names = []
        for path in sorted(self.crd_dir.glob("*.yaml")):
            for doc in yaml.safe_load_all(path.read_text()):
                if not doc:
                    continue
                names.append(doc["metadata"]["name"])
                api.call_api(
                    f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{doc['metadata']['name']}",
                    "PATCH",
                    body=doc,
                    query_params=[("fieldManager", "todo-testkit"), ("force", "true")],
                    header_params={"Content-Type": "application/apply-patch+yaml"},
                    auth_settings=["BearerToken"],
                    _return_http_data_only=True,
                )
        deadline = time.monotonic() + 60
        pending = set(names)
        while pending and time.monotonic() < deadline:
            for name in list(pending):
                crd = ext.read_custom_resource_definition(name)
                conds = {c.type: c.status for c in (crd.status.conditions or [])}
                if conds.get("Established") == "True":
                    pending.discard(name)
            time.sleep(0.2)
        if pending:
            raise TimeoutError(f"CRDs not established: {sorted(pending)}")

    def add_nodes(
        self, count: int, cpu: str | None = None, memory: str | None = None, prefix: str = "kwok-node"
    ) -> list[str]:
        api, client = self.kubectl_like_client()
        core = client.CoreV1Api(api)
        existing = {n.metadata.name for n in core.list_node().items}
        created = []
        index = 0
        while len(created) < count:
            name = f"{prefix}-{index}"
            index += 1
            if name in existing:
                continue
            capacity = {
                "cpu": cpu or self.node_cpu,
                "memory": memory or self.node_memory,
                "ephemeral-storage": "50Gi",  # what a small DOKS node's disk gives pods
                "pods": self.node_pods,
            }
            core.create_node(
                {
                    "apiVersion": "v1",
                    "kind": "Node",
                    "metadata": {
                        "name": name,
                        "annotations": {FAKE_NODE_ANNOTATION: "fake"},
                        "labels": {
                            "kubernetes.io/hostname": name,
                            "kubernetes.io/os": "linux",
                            "kubernetes.io/arch": "amd64",
                            "type": "kwok",
                            "topology.kubernetes.io/zone": f"zone-{index % 2}",
                        },
                    },
                    "status": {"capacity": capacity, "allocatable": capacity},
                }
            )
            created.append(name)
        return created

    def _wait_ready(self, timeout: float = 60) -> None:
        """Nodes Ready and the default ServiceAccount present: pods can be created and scheduled."""
        api, client = self.kubectl_like_client()
        core = client.CoreV1Api(api)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self.processes.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode}:\n{self.tail(name)}")
            nodes = core.list_node().items
            ready = [
                n
                for n in nodes
                if any(c.type == "Ready" and c.status == "True" for c in (n.status.conditions or []))
            ]
            sas = core.list_namespaced_service_account("default").items
            if (nodes or not self.kwok) and len(ready) == len(nodes) and sas:
                return
            time.sleep(0.2)
        raise TimeoutError("nodes or default ServiceAccount not ready:\n" + self.tail("kwok"))

    def stop(self) -> None:
        kill_groups([p.pid for p in self.processes.values()])
        for proc in self.processes.values():
            proc.wait()
        self.processes.clear()
        if self._owned_dir and not os.environ.get("TODO_KEEP_CONTROLPLANE"):
            shutil.rmtree(self.workdir, ignore_errors=True)

    def save_state(self) -> None:
        state = {
            "owner": 0 if self.detached else os.getpid(),
            "pids": [p.pid for p in self.processes.values()],
            "kubeconfig": str(self.kubeconfig_path),
            "ports": self.ports,
        }
        (self.workdir / STATE_FILE).write_text(json.dumps(state))


def down(workdir: Path) -> None:
    state = json.loads((workdir / STATE_FILE).read_text())
    kill_groups(state["pids"])
    shutil.rmtree(workdir, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description="Run a real Kubernetes control plane on loopback.")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start it and leave it running; prints the kubeconfig path")
    up.add_argument("--nodes", type=int, default=1)
    up.add_argument("--dir", type=Path, help="folder to use (default: a new temporary folder)")
    stop = sub.add_parser("down", help="stop the control plane started with `up`")
    stop.add_argument("--dir", type=Path, required=True)
    args = parser.parse_args()
    if args.command == "down":
        down(args.dir)
        return 0
    if args.dir:
        args.dir.mkdir(parents=True, exist_ok=True)
        cp = ControlPlane(workdir=args.dir, nodes=args.nodes, detached=True)
    else:
        cp = ControlPlane.create(nodes=args.nodes)
        cp.detached = True
    cp.start()
    atexit.unregister(cp.stop)
    print(
        f"control plane ready in {cp.timings['ready']:.1f}s "
        f"(tools {cp.timings['tools']:.1f}s, apiserver {cp.timings['apiserver']:.1f}s)",
        file=sys.stderr,
    )
    print(f"stop it with: python -m testkit.controlplane down --dir {cp.workdir}", file=sys.stderr)
    print(cp.kubeconfig_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
