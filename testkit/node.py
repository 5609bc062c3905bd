"""A real single-node Kubernetes on this machine (rung L3).

On top of the control plane of testkit/controlplane.py (etcd, kube-apiserver,
kube-controller-manager, kube-scheduler; no kwok) this starts a real node:

- containerd (Debian's package) with runc and the CNI plugins (bridge, host-local,
  portmap, loopback; Debian installs them in /usr/lib/cni), with its own root, state,
  socket and CNI folders: nothing of a host's default containerd is used;
- kubelet and kube-proxy (iptables mode) built from the pinned Kubernetes modules, with
  client certificates signed by the control plane's CA, the cgroupfs driver (cgroup v1 here),
  and eviction thresholds relaxed for a disk shared with other work;
- CoreDNS (the cluster DNS at 10.96.0.10) and metrics-server (the metrics API an HPA reads)
  from their pinned Go modules, in images podman builds on the local stand-in base
  (scripts/images.py) and imports into containerd's k8s.io namespace.

    python -m testkit.node up [--wait S]     # prints the admin kubeconfig path
    python -m testkit.node down [--dir DIR]  # every cluster when no --dir
    python -m testkit.node status | kubeconfig [--context NAME]
    python -m testkit.node images [--check]   # the app's images into the running node

The pods' bridge (todo-cni0, 10.244.0.1/24) is the node's address and the API server's
advertised one: pods reach the API server through the `kubernetes` Service like anywhere.
One cluster at a time on a machine (the bridge, the node's cgroup and kube-proxy's iptables
chains are machine-wide). `stop()` / `down` leave nothing behind: no process, no mount, no
network namespace, no veth, no bridge, no iptables rule, no cgroup, no state folder.
See docs/local-cluster.md.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import hashlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import toolchain
import yaml

from testkit.controlplane import ControlPlane, kubeconfig
from testkit.pki import issue
from testkit.procs import alive, free_port, http_status, kill_groups

ROOT = Path(__file__).resolve().parent.parent
NODE_NAME = "todo-node"
BRIDGE = "todo-cni0"
NETWORK = "todo-local"  # the CNI network's name, which its iptables rules carry in comments
POD_SUBNET = "10.244.0.0/24"
NODE_IP = "10.244.0.1"  # the bridge's address: the node's InternalIP, the API server's advertised one
CLUSTER_CIDR = "10.244.0.0/16"
SERVICE_CIDR = "10.96.0.0/16"  # the control plane's --service-cluster-ip-range
KUBERNETES_SERVICE_IP = "10.96.0.1"
DNS_IP = "10.96.0.10"
CLUSTER_DOMAIN = "cluster.local"
CGROUP_ROOT = "todo-node"  # every pod's cgroup sits under /todo-node in each hierarchy
NETNS_DIR = Path("/run/netns")
SHIM_SOCKETS = Path("/run/containerd/s")  # containerd 1.6 puts its shims' sockets there
CONTAINER_LOG_LINKS = Path("/var/log/containers")  # kubelet's links (not configurable)
DEFAULT_PARENT = Path("/var/lib/todo-cloud")  # state folders: todo-node-*
PREFIX = "todo-node-"
STATE_FILE = "state.json"
# Names the state folder of the machine's one local cluster (the bridge, the node's cgroup and
# kube-proxy's chains are machine-wide); only that cluster's sweep touches them.
OWNER_FILE = Path("/run/todo-local-cluster")
K8S_NS = "k8s.io"
IMAGE_ID_LABEL = "todo.podman-image-id"  # on each image imported from podman (containerd's labels)


def log(message: str) -> None:
    print(f"node: {message}", file=sys.stderr, flush=True)


def run(*argv: str, check: bool = True, quiet: bool = False) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr.strip()}")
    if not quiet and result.returncode != 0:
        log(f"{' '.join(argv[:3])} ...: {result.stderr.strip()}")
    return result


class ProcessExited(RuntimeError):
    """One of the cluster's daemons ended: waiting any longer is pointless."""


def wait_for(what: str, probe, timeout: float, interval: float = 0.25, diagnose=None):
    """Poll `probe` until it returns something truthy; raise with `diagnose()` after `timeout` s."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            last = probe()
        except ProcessExited:
            raise
        except Exception as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    detail = diagnose() if diagnose else ""
    raise TimeoutError(f"{what} not after {timeout:.0f}s (last: {last!r})\n{detail}")


def cni_bin_dir() -> Path:
    """Debian installs the CNI plugins outside /opt/cni/bin: ask dpkg where."""
    listed = run("dpkg", "-L", "containernetworking-plugins").stdout.split()
    bridge = next((Path(p) for p in listed if p.endswith("/bridge")), None)
    if bridge is None:
        raise RuntimeError("containernetworking-plugins is not installed (make system-deps)")
    return bridge.parent


# -- images -------------------------------------------------------------------------------


def _images_module():
    import images  # scripts/images.py (testkit puts scripts/ on sys.path)

    return images


def build_image(name: str, containerfile: str, files: dict[str, Path] | None = None) -> str:
    """An image built with podman on the stand-in base (FROM {base}); its reference, tagged
    by a digest of the recipe and the files, so an unchanged image is not built again."""
    images = _images_module()
    base = images.ensure_base(images.versions())
    recipe = containerfile.format(base=base)
    digest = hashlib.sha256(recipe.encode())
    for target, source in sorted((files or {}).items()):
        digest.update(target.encode() + b"\0" + source.read_bytes())
    ref = f"localhost/todo-{name}:{digest.hexdigest()[:12]}"
    if images.podman("image", "exists", ref, check=False).returncode == 0:
        return ref
    with tempfile.TemporaryDirectory(prefix=f"todo-image-{name}-") as tmp:
        context = Path(tmp)
        (context / "Containerfile").write_text(recipe)
        for target, source in (files or {}).items():
            shutil.copy2(source, context / target)
        images.podman("build", *images.ULIMITS, "--pull=never", "--tag", ref, str(context))
    return ref


def podman_image_id(ref: str) -> str:
    return _images_module().podman("image", "inspect", "--format", "{{.Id}}", ref).stdout.strip()


def image_archive(ref: str) -> Path:
    """`podman save` of the image as an OCI archive, cached by image ID: a new cluster imports
    it without waiting for podman's store, which other builds may hold locked for a while."""
    images = _images_module()
    image_id = podman_image_id(ref)
    folder = toolchain.cache_root() / "images" / "oci"
    archive = folder / f"{ref.rsplit('/', 1)[-1].replace(':', '-')}-{image_id[:12]}.tar"
    if not archive.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        partial = archive.with_suffix(f".tmp{os.getpid()}")
        partial.unlink(missing_ok=True)
        images.podman("save", "--format", "oci-archive", "-o", str(partial), ref)
        partial.rename(archive)
    return archive


PAUSE_CONTAINERFILE = """\
FROM {base}
# The pod sandbox's process: holds the pod's namespaces until containerd kills it.
ENTRYPOINT ["sleep", "infinity"]
"""

BINARY_CONTAINERFILE = """\
FROM {base}
COPY {binary} /usr/local/bin/{binary}
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/{binary}"]
"""


def addon_images() -> dict[str, str]:
    """The pause image (pod sandboxes), CoreDNS and metrics-server, built with podman."""
    refs = {"pause": build_image("pause", PAUSE_CONTAINERFILE)}
    for binary in ("coredns", "metrics-server"):
        source = Path(os.path.realpath(toolchain.LINK_DIR / binary))
        recipe = BINARY_CONTAINERFILE.replace("{binary}", binary)
        refs[binary] = build_image(binary, recipe, {binary: source})
    return refs


# -- the cluster --------------------------------------------------------------------------


@dataclass
class LocalCluster:
    """The control plane and one real node. `start()` / `stop()`, or `with LocalCluster.create():`."""

    workdir: Path
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    images: dict[str, str] = field(default_factory=dict)
    controlplane: ControlPlane | None = None
    detached: bool = False  # started by the CLI: lives on after this process

    @classmethod
    def create(cls, parent: Path | None = None) -> LocalCluster:
        parent = parent or DEFAULT_PARENT
        parent.mkdir(parents=True, exist_ok=True)
        reap_orphans(parent)
        return cls(workdir=Path(tempfile.mkdtemp(prefix=PREFIX, dir=parent)))

    def __enter__(self) -> LocalCluster:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- paths ---------------------------------------------------------------------------
    @property
    def kubeconfig_path(self) -> Path:
        return self.workdir / "controlplane" / "kubeconfig"

    @property
    def containerd_socket(self) -> Path:
        return self.workdir / "containerd" / "containerd.sock"

    @property
    def pki(self) -> Path:
        return self.workdir / "controlplane"

    def ctr(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return run("ctr", "--address", str(self.containerd_socket), "--namespace", K8S_NS, *args, check=check)

    def client(self):
        """A kubernetes.client ApiClient for the cluster's admin."""
        from kubernetes import config

        return config.new_client_from_config(str(self.kubeconfig_path), persist_config=False)

    def pod_logs(self, name: str, lines: int = 40) -> str:
        """The last lines of the logs of the containers called `name`, read from kubelet's files."""
        found = []
        for path in sorted((self.workdir / "pod-logs").glob(f"*/{name}/*.log")):
            found.append(f"--- {path.relative_to(self.workdir)}")
            found += path.read_text(errors="replace").splitlines()[-lines:]
        return "\n".join(found)

    def tail(self, name: str, lines: int = 40) -> str:
        path = self.workdir / f"{name}.log"
        if not path.exists():
            return ""
        return f"--- {name}.log\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    # -- lifecycle -----------------------------------------------------------------------
    def start(self, wait: float = 0) -> LocalCluster:
        """Start it; `wait` s for another local cluster on this machine to go first."""
        t0 = time.monotonic()
        preflight()
        atexit.register(self.stop)
        self.save_state()
        claim_machine(self.workdir, wait)
        log("building (or finding cached) kubelet, kube-proxy, CoreDNS and metrics-server ...")
        with open(os.devnull, "w") as quiet:
            subprocess.run(
                [
                    sys.executable,
                    str(ROOT / "scripts" / "toolchain.py"),
                    "kubernetes",
                    "coredns",
                    "metrics-server",
                ],
                check=True,
                stdout=quiet,
            )
        self.images = addon_images()
        self.timings["tools"] = time.monotonic() - t0
        self._network()
        self._cgroups()
        log("starting the control plane ...")
        self.controlplane = ControlPlane(
            workdir=self.workdir / "controlplane",
            nodes=0,
            kwok=False,
            detached=self.detached,
            apiserver_hosts=(
                NODE_IP,
                KUBERNETES_SERVICE_IP,
                "kubernetes",
                "kubernetes.default",
                f"kubernetes.default.svc.{CLUSTER_DOMAIN}",
            ),
            extra_args={"apiserver": self._apiserver_args()},
            before_start=self._issue_certificates,
        )
        self.controlplane.workdir.mkdir()
        self.controlplane.start()
        atexit.unregister(self.controlplane.stop)  # stop() below ends it, after the node
        self.timings["controlplane"] = time.monotonic() - t0
        self._containerd()
        self.timings["containerd"] = time.monotonic() - t0
        for ref in self.images.values():
            self.import_image(ref)
        self.timings["images"] = time.monotonic() - t0
        self._kubelet()
        self._kube_proxy()
        self._wait_node_ready()
        self._wait_kube_proxy_synced()
        self.timings["node"] = time.monotonic() - t0
        self._addons()
        self.timings["ready"] = time.monotonic() - t0
        log(
            "cluster ready in {ready:.0f}s (tools and images {tools:.0f}s, control plane "
            "{controlplane:.0f}s, node Ready {node:.0f}s)".format(**self.timings)
        )
        return self

    def _spawn(self, name: str, argv: list[str]) -> None:
        with open(self.workdir / f"{name}.log", "ab") as log_file:  # the child keeps its own copy
            self.processes[name] = subprocess.Popen(
                argv,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd=self.workdir,
            )
        self.save_state()

    def _check_alive(self) -> None:
        for name, proc in self.processes.items():
            if proc.poll() is not None:
                raise ProcessExited(f"{name} exited with {proc.returncode}:\n{self.tail(name)}")

    def pids(self) -> dict[str, int]:
        found = {name: p.pid for name, p in self.processes.items()}
        if self.controlplane:
            found.update({name: p.pid for name, p in self.controlplane.processes.items()})
        return found

    def save_state(self) -> None:
        state = {
            "owner": 0 if self.detached else os.getpid(),
            "pids": list(self.pids().values()),
            "processes": self.pids(),
            "kubeconfig": str(self.kubeconfig_path),
        }
        (self.workdir / STATE_FILE).write_text(json.dumps(state))

    # -- the host's side: bridge and cgroups ----------------------------------------------
    def _network(self) -> None:
        """The pods' bridge, created up front so the API server can advertise its address."""
        if run("ip", "link", "show", BRIDGE, check=False, quiet=True).returncode == 0:
            raise RuntimeError(f"{BRIDGE} exists: another local cluster runs (python -m testkit.node down)")
        run("ip", "link", "add", BRIDGE, "type", "bridge")
        run("ip", "addr", "add", f"{NODE_IP}/{POD_SUBNET.split('/')[1]}", "dev", BRIDGE)
        run("ip", "link", "set", BRIDGE, "up")
        # Service addresses are routed to the bridge, not the default route: a connection made
        # before kube-proxy wrote its rules (the API server's to an APIService, say) must fail
        # and be retried, not reach whatever answers on the host's network (here a transparent
        # TLS proxy answering 404, which the API server then kept for good)
        run("ip", "route", "add", SERVICE_CIDR, "dev", BRIDGE)

    def _cgroups(self) -> None:
        """/todo-node in each cgroup hierarchy: kubelet's cgroupRoot, so the pods' cgroups
        (and their cleanup) never meet anyone else's."""
        for hierarchy in cgroup_hierarchies():
            folder = hierarchy / CGROUP_ROOT
            folder.mkdir(exist_ok=True)
            if hierarchy.name == "cpuset":  # v1: a new cpuset starts empty; inherit the parent's
                for knob in ("cpuset.cpus", "cpuset.mems"):
                    (folder / knob).write_text((hierarchy / knob).read_text())
            if (hierarchy / "cgroup.controllers").is_file():  # v2: hand the controllers down
                wanted = {"cpu", "cpuset", "memory", "pids", "io", "hugetlb"}
                for level in (hierarchy, folder):
                    offered = set((level / "cgroup.controllers").read_text().split()) & wanted
                    (level / "cgroup.subtree_control").write_text(" ".join(f"+{c}" for c in sorted(offered)))

    # -- certificates ---------------------------------------------------------------------
    def _apiserver_args(self) -> list[str]:
        pki = self.pki
        return [
            "--bind-address=0.0.0.0",
            f"--advertise-address={NODE_IP}",
            "--endpoint-reconciler-type=lease",  # the `kubernetes` Service gets its endpoint
            "--kubelet-preferred-address-types=InternalIP",  # logs, exec: the node's name is not in DNS
            f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
            f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
            # the aggregation layer (metrics.k8s.io): front-proxy client and request headers
            f"--proxy-client-cert-file={pki / 'front-proxy-client.crt'}",
            f"--proxy-client-key-file={pki / 'front-proxy-client.key'}",
            f"--requestheader-client-ca-file={pki / 'ca.crt'}",
            "--requestheader-allowed-names=front-proxy-client",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
        ]

    def _issue(self, name: str, cn: str, orgs: tuple[str, ...] = (), hosts: tuple[str, ...] = ()) -> None:
        ca_pem, ca_key = (self.pki / "ca.crt").read_bytes(), (self.pki / "ca.key").read_bytes()
        cert, key = issue(ca_pem, ca_key, cn, orgs, hosts=hosts, client=not hosts)
        (self.pki / f"{name}.crt").write_bytes(cert)
        (self.pki / f"{name}.key").write_bytes(key)
        (self.pki / f"{name}.key").chmod(0o600)

    def _issue_certificates(self, cp: ControlPlane) -> None:
        """Runs once the control plane's CA exists, before its API server starts."""
        self._issue("apiserver-kubelet-client", "kube-apiserver-kubelet-client", ("system:masters",))
        self._issue("front-proxy-client", "front-proxy-client")
        self._issue("kubelet", f"system:node:{NODE_NAME}", ("system:nodes",))
        self._issue("kubelet-serving", NODE_NAME, hosts=(NODE_IP, "127.0.0.1", NODE_NAME))
        self._issue("kube-proxy", "system:kube-proxy")
        for user in ("kubelet", "kube-proxy"):
            config = kubeconfig(cp.server, (self.pki / "ca.crt").read_bytes(), token="", name=user)
            config["users"][0]["user"] = {
                "client-certificate": str(self.pki / f"{user}.crt"),
                "client-key": str(self.pki / f"{user}.key"),
            }
            path = self.workdir / f"{user}.kubeconfig"
            path.write_text(yaml.safe_dump(config))
            path.chmod(0o600)

    # -- containerd -------------------------------------------------------------------------
    def _containerd(self) -> None:
        folder = self.workdir / "containerd"
        cni = self.workdir / "cni"
        (cni / "net.d").mkdir(parents=True)
        (cni / "net.d" / "10-todo.conflist").write_text(json.dumps(cni_config(cni / "ipam"), indent=2))
        folder.mkdir(exist_ok=True)
        config = folder / "config.toml"
        config.write_text(
            containerd_config(
                folder,
                self.containerd_socket,
                cni_bin_dir(),
                cni / "net.d",
                self.images["pause"],
            )
        )
        self._spawn("containerd", ["containerd", "--config", str(config)])
        wait_for(
            "containerd's socket",
            lambda: self._check_alive() or (self.ctr("version", check=False).returncode == 0),
            30,
            diagnose=lambda: self.tail("containerd"),
        )

    def has_image(self, ref: str, image_id: str = "") -> bool:
        """`ref` is in containerd (and, given podman's `image_id`, is that image: a tag that
        stayed while its image changed is not)."""
        listed = self.ctr("images", "ls", f"name=={ref}").stdout.splitlines()[1:]
        return bool(listed) and (not image_id or f"{IMAGE_ID_LABEL}={image_id}" in listed[0])

    def import_image(self, ref: str) -> bool:
        """A podman image into containerd's k8s.io namespace (podman save | ctr import),
        labelled with podman's image ID; False when that image was there already."""
        image_id = podman_image_id(ref)
        if self.has_image(ref, image_id):
            return False
        archive = image_archive(ref)
        self.ctr("images", "import", "--base-name", ref.rsplit(":", 1)[0], str(archive))
        if not self.has_image(ref):
            listed = self.ctr("images", "ls", "-q").stdout
            raise RuntimeError(f"{ref} not in containerd after the import; it has:\n{listed}")
        self.ctr("images", "label", ref, f"{IMAGE_ID_LABEL}={image_id}")
        return True

    def tag_image(self, ref: str, new_ref: str) -> None:
        """`ref`, imported already, under a second name too: the same image, so nothing is
        copied or unpacked again (a new tag is what makes a rollout)."""
        image_id = podman_image_id(ref)
        if not self.has_image(ref, image_id):
            raise RuntimeError(f"{ref} (podman image {image_id[:12]}) is not in containerd: import it first")
        self.ctr("images", "tag", "--force", ref, new_ref)
        self.ctr("images", "label", new_ref, f"{IMAGE_ID_LABEL}={image_id}")

    # -- kubelet and kube-proxy -------------------------------------------------------------
    def _kubelet(self) -> None:
        self.ports["kubelet"] = free_port()
        self.ports["kubelet-healthz"] = free_port()
        config = self.workdir / "kubelet.yaml"
        config.write_text(yaml.safe_dump(kubelet_config(self, self.ports)))
        self._spawn(
            "kubelet",
            [
                str(toolchain.LINK_DIR / "kubelet"),
                f"--config={config}",
                f"--kubeconfig={self.workdir / 'kubelet.kubeconfig'}",
                f"--container-runtime-endpoint=unix://{self.containerd_socket}",
                f"--root-dir={self.workdir / 'kubelet'}",
                f"--cert-dir={self.workdir / 'kubelet' / 'pki'}",
                f"--hostname-override={NODE_NAME}",
                f"--node-ip={NODE_IP}",
                f"--pod-infra-container-image={self.images['pause']}",
                "--v=1",
            ],
        )

    def _kube_proxy(self) -> None:
        self.ports["kube-proxy-healthz"] = free_port()
        self.ports["kube-proxy-metrics"] = free_port()
        config = self.workdir / "kube-proxy.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
                    "kind": "KubeProxyConfiguration",
                    "clientConnection": {"kubeconfig": str(self.workdir / "kube-proxy.kubeconfig")},
                    "hostnameOverride": NODE_NAME,
                    "mode": "iptables",
                    "clusterCIDR": CLUSTER_CIDR,
                    "healthzBindAddress": f"127.0.0.1:{self.ports['kube-proxy-healthz']}",
                    "metricsBindAddress": f"127.0.0.1:{self.ports['kube-proxy-metrics']}",
                    # leave the host's conntrack table sizes and timeouts alone
                    "conntrack": {
                        "maxPerCore": 0,
                        "min": 0,
                        "tcpEstablishedTimeout": "0s",
                        "tcpCloseWaitTimeout": "0s",
                    },
                    "iptables": {"syncPeriod": "30s", "minSyncPeriod": "0s"},
                }
            )
        )
        self._spawn("kube-proxy", [str(toolchain.LINK_DIR / "kube-proxy"), f"--config={config}", "--v=1"])

    def _wait_kube_proxy_synced(self, timeout: float = 60) -> None:
        """kube-proxy's healthz answers 200 once it has written the Services' rules."""
        url = f"http://127.0.0.1:{self.ports['kube-proxy-healthz']}/healthz"

        def synced() -> bool:
            self._check_alive()
            return http_status(url) == 200

        wait_for("kube-proxy's rules", synced, timeout, diagnose=lambda: self.tail("kube-proxy"))

    def _wait_node_ready(self, timeout: float = 120) -> None:
        from kubernetes import client

        core = client.CoreV1Api(self.client())

        def ready() -> bool:
            self._check_alive()
            node = core.read_node(NODE_NAME)
            return any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or [])

        wait_for(
            f"node {NODE_NAME} Ready",
            ready,
            timeout,
            diagnose=lambda: self.tail("kubelet") + "\n" + self.tail("containerd"),
        )

    # -- add-ons ------------------------------------------------------------------------------
    def _addons(self) -> None:
        from kubernetes import client, dynamic

        api = self.client()
        dyn = dynamic.DynamicClient(api)
        for doc in addon_manifests(self.images):
            resource = dyn.resources.get(api_version=doc["apiVersion"], kind=doc["kind"])
            namespace = doc["metadata"].get("namespace")
            resource.server_side_apply(
                body=doc,
                name=doc["metadata"]["name"],
                namespace=namespace,
                field_manager="todo-node",
                force_conflicts=True,
            )
        apps = client.AppsV1Api(api)

        def available(name: str) -> bool:
            self._check_alive()
            status = apps.read_namespaced_deployment(name, "kube-system").status
            return bool(status.available_replicas)

        def metrics_api() -> bool:
            registration = client.ApiregistrationV1Api(api).read_api_service("v1beta1.metrics.k8s.io")
            return any(
                c.type == "Available" and c.status == "True" for c in registration.status.conditions or []
            )

        for name in ("coredns", "metrics-server"):
            wait_for(
                f"{name} available", lambda n=name: available(n), 120, diagnose=lambda: self.tail("kubelet")
            )
        wait_for(
            "the metrics API",
            metrics_api,
            120,
            diagnose=lambda: self.tail("controlplane/apiserver") + "\n" + self.pod_logs("metrics-server"),
        )

    # -- teardown ---------------------------------------------------------------------------
    def stop(self) -> None:
        """Remove every pod through the kubelet (so CNI releases its addresses and rules), then
        stop the processes and sweep what a crash could have left (see `sweep`)."""
        if self.processes.get("kubelet") and self.controlplane and self.controlplane.processes:
            with contextlib.suppress(Exception):
                self.drain()
        with contextlib.suppress(Exception):
            self.record_netns()
        pids = [p.pid for p in self.processes.values()]
        if self.controlplane:
            pids += [p.pid for p in self.controlplane.processes.values()]
        kill_groups(pids)
        for proc in self.processes.values():
            proc.wait()
        self.processes.clear()
        if self.controlplane:
            self.controlplane.stop()
        sweep(self.workdir)

    def drain(self, timeout: float = 60) -> None:
        """Controllers stopped first (nothing is recreated), then every pod deleted at once and
        the kubelet left to stop their sandboxes (CNI then releases addresses and rules)."""
        from kubernetes import client

        pids = self.pids()
        kill_groups([pids[name] for name in ("controller-manager", "scheduler") if name in pids])
        namespaces = self.record_netns()
        core = client.CoreV1Api(self.client())
        for pod in core.list_pod_for_all_namespaces().items:
            with contextlib.suppress(client.ApiException):
                core.delete_namespaced_pod(pod.metadata.name, pod.metadata.namespace, grace_period_seconds=0)
        # a sandbox's task ends before containerd has torn its network down: wait for both
        wait_for(
            "every pod sandbox stopped and its network removed",
            lambda: (
                not self.ctr("tasks", "ls", "-q").stdout.split()
                and not any(Path(path).exists() for path in namespaces)
            ),
            timeout,
            interval=0.5,
        )

    def record_netns(self) -> set[str]:
        """The network namespaces of the pod sandboxes containerd knows, noted in netns.json
        (the sweep removes those that remain)."""
        found = set(_recorded_netns(self.workdir))
        for container in self.ctr("containers", "ls", "-q").stdout.split():
            info = self.ctr("containers", "info", container, check=False)
            with contextlib.suppress(ValueError, KeyError, TypeError):
                found |= _netns_paths(json.loads(info.stdout)["Spec"])
        (self.workdir / "netns.json").write_text(json.dumps(sorted(found)))
        return found


# -- configuration files ------------------------------------------------------------------------


def cni_config(ipam_dir: Path) -> dict:
    return {
        "cniVersion": "1.0.0",
        "name": NETWORK,
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                "ipMasq": True,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": POD_SUBNET, "gateway": NODE_IP}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(ipam_dir),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def containerd_config(folder: Path, socket: Path, cni_bin: Path, cni_conf: Path, pause: str) -> str:
    """containerd 1.6 (config version 2), all of its state under `folder`."""
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return f"""\
version = 2
root = "{folder / "root"}"
state = "{folder / "state"}"
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp",
]

[grpc]
  address = "{socket}"

[ttrpc]
  address = "{socket}.ttrpc"

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{folder / "opt"}"

[{cri}]
  sandbox_image = "{pause}"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  # root here lacks CAP_SYS_RESOURCE: a negative oom_score_adj (sandboxes get -998) would make
  # runc fail ("can't get final child's PID from pipe"); never go below containerd's own
  restrict_oom_score_adj = true
  max_container_log_line_size = 16384

[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"
  discard_unpacked_layers = false

[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[{cri}.containerd.runtimes.runc.options]
  BinaryName = "{shutil.which("runc") or "runc"}"
  Root = "{folder / "runc"}"
  SystemdCgroup = false

[{cri}.cni]
  bin_dir = "{cni_bin}"
  conf_dir = "{cni_conf}"
  max_conf_num = 1
"""


def kubelet_config(cluster: LocalCluster, ports: dict[str, int]) -> dict:
    pki = cluster.pki
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "port": ports["kubelet"],
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": ports["kubelet-healthz"],
        "tlsCertFile": str(pki / "kubelet-serving.crt"),
        "tlsPrivateKeyFile": str(pki / "kubelet-serving.key"),
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(pki / "ca.crt")},
        },
        "authorization": {"mode": "Webhook"},
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": f"/{CGROUP_ROOT}",
        "failSwapOn": False,
        "clusterDNS": [DNS_IP],
        "clusterDomain": CLUSTER_DOMAIN,
        "resolvConf": "/etc/resolv.conf",
        "podLogsDir": str(cluster.workdir / "pod-logs"),
        "maxPods": 110,
        "serializeImagePulls": False,
        # a disk and memory shared with other work: evict only when really short
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "1%",
            "nodefs.inodesFree": "1%",
            "imagefs.available": "1%",
        },
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "nodeStatusReportFrequency": "10s",
        "nodeStatusUpdateFrequency": "5s",
        "syncFrequency": "10s",
        "fileCheckFrequency": "10s",
        "shutdownGracePeriod": "0s",
        "failCgroupV1": False,
        "rotateCertificates": False,
        "serverTLSBootstrap": False,
    }


# -- the add-ons' manifests ---------------------------------------------------------------------

COREFILE = f"""\
.:53 {{
    errors
    health {{
        lameduck 5s
    }}
    ready
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 30
    }}
    prometheus :9153
    forward . /etc/resolv.conf
    cache 30
    loop
    reload
    loadbalance
}}
"""

ADDON_SECURITY = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
}


def _meta(name: str, labels: dict | None = None, namespace: str | None = "kube-system") -> dict:
    meta: dict = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    if labels:
        meta["labels"] = labels
    return meta


def _cluster_role(name: str, rules: list[dict]) -> dict:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": _meta(name, namespace=None),
        "rules": rules,
    }


def _binding(kind: str, name: str, role_kind: str, role: str, account: str) -> dict:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": kind,
        "metadata": _meta(name, namespace="kube-system" if kind == "RoleBinding" else None),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role},
        "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": "kube-system"}],
    }


def _deployment(name: str, labels: dict, pod_spec: dict, replicas: int = 1) -> dict:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(name, labels),
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        },
    }


def coredns_manifests(image: str) -> list[dict]:
    labels = {"k8s-app": "kube-dns"}
    read = ["list", "watch"]
    pod_spec = {
        "serviceAccountName": "coredns",
        "priorityClassName": "system-cluster-critical",
        "dnsPolicy": "Default",
        "securityContext": {
            "runAsUser": 65532,
            "runAsGroup": 65532,
            # bind port 53 without a capability
            "sysctls": [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "53"}],
        },
        "containers": [
            {
                "name": "coredns",
                "image": image,
                "imagePullPolicy": "Never",
                "args": ["-conf", "/etc/coredns/Corefile"],
                "ports": [
                    {"name": "dns", "containerPort": 53, "protocol": "UDP"},
                    {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"},
                    {"name": "metrics", "containerPort": 9153, "protocol": "TCP"},
                ],
                "resources": {"requests": {"cpu": "50m", "memory": "40Mi"}, "limits": {"memory": "170Mi"}},
                "securityContext": ADDON_SECURITY,
                "volumeMounts": [{"name": "config", "mountPath": "/etc/coredns", "readOnly": True}],
                "livenessProbe": {
                    "httpGet": {"path": "/health", "port": 8080},
                    "initialDelaySeconds": 10,
                    "periodSeconds": 10,
                },
                "readinessProbe": {"httpGet": {"path": "/ready", "port": 8181}, "periodSeconds": 2},
            }
        ],
        "volumes": [{"name": "config", "configMap": {"name": "coredns"}}],
    }
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta("coredns")},
        _cluster_role(
            "system:coredns",
            [
                {
                    "apiGroups": [""],
                    "resources": ["endpoints", "services", "pods", "namespaces"],
                    "verbs": read,
                },
                {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": read},
            ],
        ),
        _binding("ClusterRoleBinding", "system:coredns", "ClusterRole", "system:coredns", "coredns"),
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": _meta("coredns"),
            "data": {"Corefile": COREFILE},
        },
        _deployment("coredns", labels, pod_spec),
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": _meta("kube-dns", {**labels, "kubernetes.io/name": "CoreDNS"}),
            "spec": {
                "selector": labels,
                "clusterIP": DNS_IP,
                "ports": [
                    {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                    {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
                    {"name": "metrics", "port": 9153, "protocol": "TCP", "targetPort": 9153},
                ],
            },
        },
    ]


def metrics_server_manifests(image: str) -> list[dict]:
    labels = {"k8s-app": "metrics-server"}
    sa_ca = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"  # the cluster CA signs the kubelet's
    pod_spec = {
        "serviceAccountName": "metrics-server",
        "priorityClassName": "system-cluster-critical",
        "containers": [
            {
                "name": "metrics-server",
                "image": image,
                "imagePullPolicy": "Never",
                "args": [
                    "--cert-dir=/var/run/serving-cert",
                    "--secure-port=10250",
                    "--kubelet-preferred-address-types=InternalIP",
                    "--kubelet-use-node-status-port",
                    f"--kubelet-certificate-authority={sa_ca}",
                    "--metric-resolution=15s",
                ],
                "ports": [{"name": "https", "containerPort": 10250, "protocol": "TCP"}],
                "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "200Mi"}},
                "securityContext": ADDON_SECURITY,
                "volumeMounts": [{"name": "certs", "mountPath": "/var/run/serving-cert"}],
                "readinessProbe": {
                    "httpGet": {"path": "/readyz", "port": "https", "scheme": "HTTPS"},
                    "periodSeconds": 2,
                    "failureThreshold": 3,
                },
                "livenessProbe": {
                    "httpGet": {"path": "/livez", "port": "https", "scheme": "HTTPS"},
                    "periodSeconds": 10,
                },
            }
        ],
        "volumes": [{"name": "certs", "emptyDir": {}}],
    }
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta("metrics-server")},
        _cluster_role(
            "system:metrics-server",
            [
                {"apiGroups": [""], "resources": ["nodes/metrics"], "verbs": ["get"]},
                {"apiGroups": [""], "resources": ["pods", "nodes"], "verbs": ["get", "list", "watch"]},
            ],
        ),
        _binding(
            "ClusterRoleBinding",
            "system:metrics-server",
            "ClusterRole",
            "system:metrics-server",
            "metrics-server",
        ),
        _binding(
            "ClusterRoleBinding",
            "metrics-server:system:auth-delegator",
            "ClusterRole",
            "system:auth-delegator",
            "metrics-server",
        ),
        _binding(
            "RoleBinding",
            "metrics-server-auth-reader",
            "Role",
            "extension-apiserver-authentication-reader",
            "metrics-server",
        ),
        _deployment("metrics-server", labels, pod_spec),
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": _meta("metrics-server", labels),
            "spec": {"selector": labels, "ports": [{"name": "https", "port": 443, "targetPort": "https"}]},
        },
        {
            "apiVersion": "apiregistration.k8s.io/v1",
            "kind": "APIService",
            "metadata": _meta("v1beta1.metrics.k8s.io", labels, namespace=None),
            "spec": {
                "group": "metrics.k8s.io",
                "version": "v1beta1",
                "service": {"name": "metrics-server", "namespace": "kube-system", "port": 443},
                # metrics-server serves a certificate it made itself (--cert-dir)
                "insecureSkipTLSVerify": True,
                "groupPriorityMinimum": 100,
                "versionPriority": 100,
            },
        },
    ]


def addon_manifests(images: dict[str, str]) -> list[dict]:
    return [*coredns_manifests(images["coredns"]), *metrics_server_manifests(images["metrics-server"])]


# -- preflight and sweeping ---------------------------------------------------------------------


def preflight() -> None:
    if os.geteuid() != 0:
        raise SystemExit("node: a real node needs root (containerd, iptables, mounts)")
    missing = [
        b
        for b in ("containerd", "containerd-shim-runc-v2", "ctr", "runc", "iptables", "ip")
        if not shutil.which(b)
    ]
    if missing:
        raise SystemExit(f"node: missing {', '.join(missing)}; run `make system-deps`")
    if not cgroup_hierarchies():
        raise SystemExit("node: no cgroup hierarchy mounted (see docs/local-cluster.md)")
    if not Path("/proc/sys/net/bridge").is_dir():
        run("modprobe", "br_netfilter")
    for knob in ("net/ipv4/ip_forward", "net/bridge/bridge-nf-call-iptables"):
        path = Path("/proc/sys") / knob
        if path.read_text().strip() != "1":
            path.write_text("1")


def cgroup_hierarchies() -> list[Path]:
    """The cgroup v1 hierarchies (kubelet wants its cgroupRoot in each, name=systemd too), or
    the one cgroup v2 hierarchy (untested here: this machine has v1, docs/local-cluster.md)."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split(" - ", 1)
        if len(fields) == 2 and fields[1].startswith(("cgroup ", "cgroup2 ")):
            found.append(Path(fields[0].split()[4]))
    return sorted(set(found))


def mounts_under(folder: Path) -> list[str]:
    """Mount points at or below `folder`, deepest first (mountinfo escapes spaces as \\040)."""
    prefix = str(folder.resolve())
    points = [
        line.split()[4].replace("\\040", " ")
        for line in Path("/proc/self/mountinfo").read_text().splitlines()
    ]
    return sorted({p for p in points if p == prefix or p.startswith(prefix + "/")}, key=len, reverse=True)


def node_processes(workdir: Path) -> list[int]:
    """Processes of this cluster: any whose command line names the state folder (containerd,
    kubelet, kube-proxy, the shims) and any in the pods' cgroups."""
    found = []
    marker = str(workdir).encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if (
                marker in (entry / "cmdline").read_bytes()
                or f":/{CGROUP_ROOT}/" in (entry / "cgroup").read_text()
            ):
                found.append(int(entry.name))
    return [pid for pid in found if alive(pid)]


def iptables_leftovers() -> list[str]:
    """Rules and chains a local cluster makes: kube-proxy's and kubelet's KUBE-*, and the CNI
    plugins' per-pod chains (their comments name our network)."""
    lines = []
    for binary in ("iptables", "ip6tables"):
        dump = run(f"{binary}-save", check=False, quiet=True).stdout
        lines += [
            f"{binary}: {line}"
            for line in dump.splitlines()
            if "KUBE-" in line or f'name: \\"{NETWORK}\\"' in line or f'name: "{NETWORK}"' in line
        ]
    return lines


def leftovers(workdir: Path) -> list[str]:
    """What a removed cluster left behind, one line each (none: the removal was complete): its
    state folder, its processes and mounts, pod network namespaces (containerd's cni-*; podman's
    netns-* are not the cluster's), the bridge, the iptables rules, the pods' cgroups."""
    found = [f"state folder {workdir}"] if workdir.exists() else []
    found += [f"process {pid}" for pid in node_processes(workdir)]
    found += [f"mount {point}" for point in mounts_under(workdir)]
    found += [f"network namespace {path.name}" for path in NETNS_DIR.glob("cni-*")]
    if run("ip", "link", "show", BRIDGE, check=False, quiet=True).returncode == 0:
        found.append(f"bridge {BRIDGE}")
    found += iptables_leftovers()
    found += [f"cgroup {h / CGROUP_ROOT}" for h in cgroup_hierarchies() if (h / CGROUP_ROOT).exists()]
    return found


def _clean_iptables() -> None:
    """Delete the KUBE-* chains and the CNI chains of our network, in every table."""
    for binary in ("iptables", "ip6tables"):
        dump = run(f"{binary}-save", check=False, quiet=True).stdout
        table = ""
        ours: dict[str, set[str]] = {}
        rules: list[tuple[str, str]] = []
        for line in dump.splitlines():
            if line.startswith("*"):
                table = line[1:]
            elif line.startswith(":"):
                chain = line[1:].split()[0]
                if chain.startswith("KUBE-"):
                    ours.setdefault(table, set()).add(chain)
            elif line.startswith("-A "):
                rules.append((table, line))
        for table, line in rules:  # the CNI chains our network's rules jump to
            if f'name: \\"{NETWORK}\\"' in line and " -j " in line:
                target = line.split(" -j ", 1)[1].split()[0]
                if target.startswith("CNI-"):
                    ours.setdefault(table, set()).add(target)
        for table, line in rules:  # rules in others' chains that lead to ours, or carry our name
            chain = line.split()[1]
            jumps = line.split(" -j ", 1)[1].split()[0] if " -j " in line else ""
            if chain not in ours.get(table, set()) and (
                jumps in ours.get(table, set()) or f'name: \\"{NETWORK}\\"' in line
            ):
                run(binary, "-t", table, "-D", *shlex.split(line[3:]), check=False, quiet=True)
        for table, chains in ours.items():
            for chain in chains:
                run(binary, "-t", table, "-F", chain, check=False, quiet=True)
            for chain in chains:
                run(binary, "-t", table, "-X", chain, check=False, quiet=True)


def sweep(workdir: Path) -> None:
    """Leave nothing of the cluster behind, whatever state it is in: processes, mounts, network
    namespaces, veths, the bridge, iptables rules, cgroups, kubelet's log links, the folder."""
    for _ in range(3):
        pids = node_processes(workdir)
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        wait_for("the cluster's processes to end", lambda: not node_processes(workdir), 20)
    # network namespaces of our pod sandboxes: noted by `record_netns`, and in the running
    # tasks' specs under our state folder
    namespaces = set(_recorded_netns(workdir))
    for spec in (workdir / "containerd" / "state").glob("io.containerd.runtime.v2.task/*/*/config.json"):
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            namespaces |= _netns_paths(json.loads(spec.read_text()))
    for path in namespaces:
        if Path(path).exists():
            run("umount", path, check=False, quiet=True)
            Path(path).unlink(missing_ok=True)
    for point in mounts_under(workdir):
        run("umount", "--lazy", point, check=False, quiet=True)
    if SHIM_SOCKETS.is_dir():
        # the shims' sockets are named by a digest of our socket path, namespace and container
        address = str(workdir / "containerd" / "containerd.sock")
        for task_dir in (workdir / "containerd" / "state").glob("io.containerd.runtime.v2.task/*/*"):
            digest = hashlib.sha256(f"{address}/{task_dir.parent.name}/{task_dir.name}".encode()).hexdigest()
            (SHIM_SOCKETS / digest).unlink(missing_ok=True)
    if CONTAINER_LOG_LINKS.is_dir():
        for link in CONTAINER_LOG_LINKS.iterdir():
            if link.is_symlink() and os.readlink(link).startswith(str(workdir)):
                link.unlink()
    owner = _machine_owner()
    if owner == workdir:  # the machine-wide parts are this cluster's
        run("ip", "link", "delete", BRIDGE, check=False, quiet=True)
        _clean_iptables()
        for hierarchy in cgroup_hierarchies():
            root = hierarchy / CGROUP_ROOT
            if root.is_dir():
                for folder in sorted(
                    (p for p in root.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True
                ):
                    with contextlib.suppress(OSError):
                        folder.rmdir()
                with contextlib.suppress(OSError):
                    root.rmdir()
    shutil.rmtree(workdir, ignore_errors=True)
    if owner == workdir:
        OWNER_FILE.unlink(missing_ok=True)


def _netns_paths(spec: dict) -> set[str]:
    """The network namespace files an OCI runtime spec names (containerd's /run/netns/cni-*)."""
    namespaces = (spec.get("linux") or {}).get("namespaces") or []
    network = [ns["path"] for ns in namespaces if ns.get("type") == "network" and ns.get("path")]
    paths = {os.path.realpath(path) for path in network}
    return {path for path in paths if path.startswith(str(NETNS_DIR) + "/")}  # /var/run is /run


def _recorded_netns(workdir: Path) -> list[str]:
    try:
        return list(json.loads((workdir / "netns.json").read_text()))
    except (OSError, ValueError):
        return []


def _machine_owner() -> Path | None:
    try:
        return Path(OWNER_FILE.read_text().strip())
    except OSError:
        return None


def _running(workdir: Path) -> bool:
    """A cluster whose starter lives on (a test run), or a detached one with a live process."""
    try:
        state = json.loads((workdir / STATE_FILE).read_text())
    except (OSError, ValueError):
        return False
    if state.get("owner"):
        return alive(state["owner"])
    return any(alive(pid) for pid in state.get("pids", []))


def claim_machine(workdir: Path, wait: float = 0) -> None:
    """Become the machine's one local cluster: sweep a dead holder, wait `wait` s for a live one."""
    deadline = time.monotonic() + wait
    while True:
        try:
            fd = os.open(OWNER_FILE, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _machine_owner()
            if holder == workdir:
                return
            if holder is None:  # released meanwhile
                continue
            if not _running(holder):
                log(f"removing what a dead local cluster left in {holder}")
                kill_groups(_state_pids(holder), grace=5)
                sweep(holder)
                OWNER_FILE.unlink(missing_ok=True)  # a holder whose folder was gone already
                continue
            if time.monotonic() > deadline:
                hint = f"python -m testkit.node down --dir {holder}"
                raise RuntimeError(f"a local cluster runs in {holder}; stop it first: {hint}") from None
            time.sleep(2)
        else:
            with os.fdopen(fd, "w") as owner:
                owner.write(str(workdir))
            return


def _state_pids(workdir: Path) -> list[int]:
    try:
        return list(json.loads((workdir / STATE_FILE).read_text()).get("pids", []))
    except (OSError, ValueError):
        return []


def reap_orphans(parent: Path) -> None:
    """Sweep the clusters whose owner died (a killed test run); detached ones stay."""
    for state_file in parent.glob(f"{PREFIX}*/{STATE_FILE}"):
        with contextlib.suppress(OSError, ValueError, KeyError):
            state = json.loads(state_file.read_text())
            if state["owner"] and not alive(state["owner"]):
                kill_groups(list(state["pids"]), grace=5)
                sweep(state_file.parent)
    holder = _machine_owner()
    if holder is not None and not holder.exists():
        OWNER_FILE.unlink(missing_ok=True)


def down(workdir: Path) -> None:
    """Stop a cluster started by `up` (another process): its pods first, then the rest."""
    state = json.loads((workdir / STATE_FILE).read_text())
    cluster = LocalCluster(workdir=workdir)
    cluster.processes = {name: _Adopted(pid) for name, pid in state.get("processes", {}).items()}
    if "kubelet" in cluster.processes and "apiserver" in cluster.processes:
        with contextlib.suppress(Exception):
            cluster.drain()
    with contextlib.suppress(Exception):
        cluster.record_netns()
    kill_groups(list(state["pids"]))
    sweep(workdir)


@dataclass
class _Adopted:
    """A process another run started, seen through the one attribute `pids()` reads."""

    pid: int


def status() -> dict:
    """The machine's local cluster: whether it runs, its state folder and admin kubeconfig."""
    holder = _machine_owner()
    running = bool(holder and _running(holder))
    return {
        "running": running,
        "dir": str(holder) if running else None,
        "kubeconfig": str(holder / "controlplane" / "kubeconfig") if running and holder else None,
    }


def app_image_names() -> list[str]:
    """The images the app needs on the node: the four services, then the platform's
    (PostgreSQL, Kafka, daprd, the Dapr scheduler, the edge)."""
    images = _images_module()
    return [*images.SERVICES, *images.PLATFORM]


def app_images(cluster: LocalCluster, check: bool = False, names: list[str] | None = None) -> dict:
    """The app's images (all of `app_image_names()`, or `names`; the services at this commit)
    built with podman (scripts/images.py; progress on stderr) and imported into the node.
    `check`: build and import nothing, report what is missing."""
    images = _images_module()
    names = names or app_image_names()
    if unknown := sorted(set(names) - set(app_image_names())):
        raise SystemExit(f"node: no such image: {', '.join(unknown)} (images --list names them)")
    services = [name for name in names if name in images.SERVICES]
    platform = [name for name in names if name in images.PLATFORM]
    with contextlib.redirect_stdout(sys.stderr):
        if check:
            every = {**images.refs(), **images.platform_refs(images.versions())}
            refs = {name: every[name] for name in names}
        else:
            refs = {
                **(images.build(services, "standin") if services else {}),
                **(images.build_platform(platform) if platform else {}),
            }
    users, ids = {}, {}
    for name, ref in refs.items():
        found = images.podman("image", "inspect", "--format", "{{.Config.User}} {{.Id}}", ref, check=False)
        if found.returncode == 0:
            user, _, ids[name] = found.stdout.strip().rpartition(" ")
            users[name] = user.split(":")[0]
    report = {"refs": refs, "users": users, "ids": ids}
    if check:
        return report | {"missing": [r for n, r in refs.items() if not cluster.has_image(r, ids.get(n, ""))]}
    return report | {"imported": [ref for ref in refs.values() if cluster.import_image(ref)]}


def renamed_kubeconfig(path: Path, context: str) -> dict:
    """The admin kubeconfig with its one context, cluster and user named after `context`."""
    config = yaml.safe_load(path.read_text())
    config["clusters"][0]["name"] = context
    config["users"][0]["name"] = f"{context}-admin"
    config["contexts"] = [{"name": context, "context": {"cluster": context, "user": f"{context}-admin"}}]
    config["current-context"] = context
    return config


def main() -> int:
    parser = argparse.ArgumentParser(description="A real single-node Kubernetes (rung L3).")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start it and leave it running; prints the kubeconfig path")
    up.add_argument("--parent", type=Path, default=DEFAULT_PARENT, help="where its state folder goes")
    up.add_argument("--wait", type=float, default=0, help="seconds to wait for another local cluster to go")
    stop = sub.add_parser("down", help="stop a cluster started with `up` (all of them without --dir)")
    stop.add_argument("--dir", type=Path, help="its state folder")
    stop.add_argument("--parent", type=Path, default=DEFAULT_PARENT)
    sub.add_parser("status", help="the machine's local cluster, as JSON: running, dir, kubeconfig")
    config = sub.add_parser("kubeconfig", help="print the running cluster's admin kubeconfig")
    config.add_argument("--context", default="todo-local", help="the name of its context (and cluster)")
    load = sub.add_parser("images", help="build the app's images and import them into the running cluster")
    load.add_argument("--check", action="store_true", help="only report what would be imported")
    load.add_argument("--only", action="append", metavar="NAME", help="this image only (repeatable)")
    load.add_argument("--list", action="store_true", help="print the images' names as JSON, do nothing")
    args = parser.parse_args()
    if args.command == "images" and args.list:
        print(json.dumps(app_image_names()))
        return 0
    if args.command == "images":
        found = status()
        if not found["running"]:
            raise SystemExit("node: no local cluster runs (python -m testkit.node up)")
        cluster = LocalCluster(workdir=Path(found["dir"]))
        print(json.dumps(app_images(cluster, check=args.check, names=args.only) | {"dir": found["dir"]}))
        return 0
    if args.command == "status":
        print(json.dumps(status()))
        return 0
    if args.command == "kubeconfig":
        found = status()
        if not found["running"]:
            raise SystemExit("node: no local cluster runs (python -m testkit.node up)")
        print(yaml.safe_dump(renamed_kubeconfig(Path(found["kubeconfig"]), args.context)), end="")
        return 0
    if args.command == "down":
        folders = (
            [args.dir] if args.dir else sorted(p.parent for p in args.parent.glob(f"{PREFIX}*/{STATE_FILE}"))
        )
        for folder in folders:
            down(folder)
            log(f"removed the cluster in {folder}")
        return 0
    cluster = LocalCluster.create(args.parent)
    cluster.detached = True
    try:
        cluster.start(wait=args.wait)
    except BaseException:
        cluster.stop()
        raise
    atexit.unregister(cluster.stop)
    log(f"stop it with: python -m testkit.node down --dir {cluster.workdir}")
    print(cluster.kubeconfig_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
