"""TEST DOUBLE of the DigitalOcean API: only the endpoints roles/cluster calls.

The DigitalOcean API cannot be reached from this machine. The role's real code path
(community.digitalocean's modules and ansible.builtin.uri, unmodified) talks HTTPS to
https://api.digitalocean.com/v2, and community.digitalocean's Kubernetes modules have no
option to change that address (their DigitalOceanHelper falls back to the fixed base URL
because neither module declares `baseurl`). So this stand-in is reached the way any client
reaches the internet through a proxy: the test sets HTTPS_PROXY to this server, which
accepts CONNECT for api.digitalocean.com:443 only and answers inside the tunnel with a
certificate for api.digitalocean.com from a throwaway CA that only the test run trusts
(SSL_CERT_FILE). Nothing in the role knows about it.

Endpoints (as the role uses them; everything else answers 404 and is recorded):

    GET    /v2/account                                        token check of every DO module
    GET    /v2/kubernetes/options                             regions, versions, sizes
    GET    /v2/kubernetes/clusters                            list (lookup by name)
    POST   /v2/kubernetes/clusters                            create: 201, state provisioning
    GET    /v2/kubernetes/clusters/{id}                       provisioning -> running
    GET    /v2/kubernetes/clusters/{id}/kubeconfig?expiry_seconds=N
    GET    /v2/kubernetes/clusters/{id}/destroy_with_associated_resources
    DELETE /v2/kubernetes/clusters/{id}/destroy_with_associated_resources/dangerous

Every request needs `Authorization: Bearer <token>` (401 otherwise, as the real API). A new
cluster answers `provisioning` for `provisioning_reads` reads, then `running`; a deleted
one answers `deleting` for `deleting_reads` reads, then is gone. Each kubeconfig carries a
fresh token; `issued_tokens` lists them so tests can prove none was logged. Every request
is recorded (`requests`, and requests.jsonl in the folder) without the bearer token.

In a test (in process):   double = DoApiDouble(folder, token).start(); double.env; double.stop()
For Molecule (a process): python -m testkit.do_api_double start|stop --dir DIR
                          (start reads the token from DIR/token and writes DIR/env.json)
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime as dt
import json
import os
import re
import secrets
import signal
import ssl
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import yaml

from testkit.pki import server_pki
from testkit.procs import alive

API_HOST = "api.digitalocean.com"
ROOT = Path(__file__).resolve().parent.parent

# What DigitalOcean's /v2/kubernetes/options offers (a subset; the slugs are real).
REGIONS = ("ams3", "atl1", "blr1", "fra1", "lon1", "nyc1", "nyc3", "sfo2", "sfo3", "sgp1", "syd1", "tor1")
SIZES = ("s-1vcpu-2gb", "s-2vcpu-2gb", "s-2vcpu-4gb", "s-4vcpu-8gb", "s-8vcpu-16gb", "g-2vcpu-8gb")


def pinned_doks_version() -> str:
    for line in (ROOT / "versions.env").read_text().splitlines():
        if line.startswith("DOKS_KUBERNETES_VERSION="):
            return line.partition("=")[2].strip().strip('"')
    raise LookupError("versions.env has no DOKS_KUBERNETES_VERSION")


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ApiError(Exception):
    def __init__(self, status: int, error_id: str, message: str) -> None:
        super().__init__(message)
        self.status, self.error_id, self.message = status, error_id, message


class DoApiDouble:
    """The DigitalOcean API stand-in (see the module docstring)."""

    def __init__(
        self,
        folder: Path,
        token: str,
        *,
        versions: tuple[str, ...] | None = None,
        provisioning_reads: int = 1,
        deleting_reads: int = 1,
    ) -> None:
        self.folder = Path(folder)
        self.token = token
        self.versions = versions or (pinned_doks_version(),)
        self.provisioning_reads = provisioning_reads
        self.deleting_reads = deleting_reads
        self.clusters: dict[str, dict] = {}
        self.associated: dict[str, dict] = {}
        self.requests: list[dict] = []
        self.issued_tokens: list[str] = []
        self.kubeconfig_expiries: list[int] = []
        self._reads_left: dict[str, int] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.ca_file = self.folder / "ca.pem"
        self.log_file = self.folder / "requests.jsonl"

    # ---- lifecycle ------------------------------------------------------------------------

    def start(self) -> DoApiDouble:
        self.folder.mkdir(parents=True, exist_ok=True)
        pki = server_pki("todo DO API test double CA", API_HOST, (API_HOST,))
        pki.write(self.folder, ca="ca.pem", cert="server.pem", key="server.key")
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(self.folder / "server.pem", self.folder / "server.key")
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _ProxyHandler)
        self._server.daemon_threads = True
        self._server.double = self  # the handlers reach the state through their server
        self._server.tls = tls
        self._thread = threading.Thread(target=self._server.serve_forever, name="do-api-double", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def port(self) -> int:
        assert self._server, "not started"
        return self._server.server_address[1]

    @property
    def env(self) -> dict[str, str]:
        """What a client process needs to reach the double instead of the real API."""
        proxy = f"http://127.0.0.1:{self.port}"
        return {
            "HTTPS_PROXY": proxy,
            "https_proxy": proxy,
            "NO_PROXY": "",
            "no_proxy": "",
            "SSL_CERT_FILE": str(self.ca_file),
        }

    # ---- state for tests ------------------------------------------------------------------

    def seed_cluster(self, name: str, **spec) -> dict:
        """A cluster that already exists (as if made earlier, or by hand), running."""
        body = {
            "name": name,
            "region": spec.pop("region", "fra1"),
            "version": spec.pop("version", self.versions[0]),
            "node_pools": spec.pop(
                "node_pools",
                [
                    {
                        "name": "pool",
                        "size": "s-2vcpu-4gb",
                        "count": 3,
                        "auto_scale": True,
                        "min_nodes": 3,
                        "max_nodes": 4,
                    }
                ],
            ),
            **spec,
        }
        with self._lock:
            cluster = self._new_cluster(body)
            cluster["status"] = {"state": "running", "message": ""}
            self._ready(cluster)
            self._reads_left.pop(cluster["id"], None)
        return cluster

    def seed_associated(self, cluster_id: str, load_balancers=(), volumes=(), snapshots=()) -> None:
        self.associated[cluster_id] = {
            "load_balancers": [{"id": str(uuid.uuid4()), "name": n} for n in load_balancers],
            "volumes": [{"id": str(uuid.uuid4()), "name": n} for n in volumes],
            "volume_snapshots": [{"id": str(uuid.uuid4()), "name": n} for n in snapshots],
        }

    def calls(self, method: str | None = None, pattern: str = "") -> list[dict]:
        """Recorded requests, optionally of one method and matching a path regex."""
        with self._lock:
            return [
                r
                for r in self.requests
                if (method is None or r["method"] == method) and re.search(pattern, r["path"])
            ]

    def reset_log(self) -> None:
        with self._lock:
            self.requests.clear()

    # ---- the API --------------------------------------------------------------------------

    def handle(self, method: str, target: str, headers, body: bytes) -> tuple[int, str, bytes]:
        """One API request: (status, content type, body). Records it."""
        url = urlsplit(target)
        path, query = url.path, {k: v[-1] for k, v in parse_qs(url.query).items()}
        auth = headers.get("Authorization", "")
        auth_state = "ok" if auth == f"Bearer {self.token}" else ("missing" if not auth else "invalid")
        parsed = None
        if body:
            with contextlib.suppress(ValueError):
                parsed = json.loads(body)
        try:
            if auth_state != "ok":
                raise ApiError(401, "Unauthorized", "Unable to authenticate you")
            with self._lock:
                status, content_type, payload = self._route(method, path, query, parsed)
        except ApiError as error:
            status, content_type = error.status, "application/json"
            payload = json.dumps({"id": error.error_id, "message": error.message}).encode()
        record = {
            "method": method,
            "path": path,
            "query": query,
            "auth": auth_state,
            "status": status,
            "body": parsed,
        }
        with self._lock:
            self.requests.append(record)
            with self.log_file.open("a") as log:
                log.write(json.dumps(record) + "\n")
        return status, content_type, payload

    def _route(self, method: str, path: str, query: dict, body) -> tuple[int, str, bytes]:
        match = re.fullmatch(r"/v2/kubernetes/clusters/([0-9a-f-]+)(/.*)?", path)
        if method == "GET" and path == "/v2/account":
            return self._json(
                200,
                {
                    "account": {
                        "droplet_limit": 25,
                        "floating_ip_limit": 3,
                        "email": "owner@example.invalid",
                        "uuid": "5f1c2a2e-6d5b-4a4e-9d53-0c1e0f4b9a11",
                        "email_verified": True,
                        "status": "active",
                        "status_message": "",
                        "team": {"uuid": "a7a8b1f2-3c4d-4e5f-8a9b-0c1d2e3f4a5b", "name": "todo"},
                    }
                },
            )
        if method == "GET" and path == "/v2/kubernetes/options":
            return self._json(
                200,
                {
                    "options": {
                        "regions": [{"name": slug.upper(), "slug": slug} for slug in REGIONS],
                        "versions": [
                            {
                                "slug": v,
                                "kubernetes_version": v.split("-")[0],
                                "supported_features": ["cluster-autoscaler", "token-authentication"],
                            }
                            for v in self.versions
                        ],
                        "sizes": [{"name": slug, "slug": slug} for slug in SIZES],
                    }
                },
            )
        if path == "/v2/kubernetes/clusters":
            if method == "GET":
                listed = [self._observe(c) for c in list(self.clusters.values())]
                listed = [c for c in listed if c]
                return self._json(
                    200, {"kubernetes_clusters": listed, "meta": {"total": len(listed)}, "links": {}}
                )
            if method == "POST":
                return self._json(201, {"kubernetes_cluster": self._create(body or {})})
        if match and match.group(1) in self.clusters:
            cluster_id, rest = match.group(1), match.group(2) or ""
            if method == "GET" and rest == "":
                cluster = self._observe(self.clusters[cluster_id])
                if cluster is None:
                    raise ApiError(404, "not_found", "The resource you were accessing could not be found.")
                return self._json(200, {"kubernetes_cluster": cluster})
            if method == "GET" and rest == "/kubeconfig":
                return 200, "application/yaml", self._kubeconfig(self.clusters[cluster_id], query)
            if method == "GET" and rest == "/destroy_with_associated_resources":
                return self._json(
                    200,
                    self.associated.get(
                        cluster_id, {"load_balancers": [], "volumes": [], "volume_snapshots": []}
                    ),
                )
            if method == "DELETE" and rest == "/destroy_with_associated_resources/dangerous":
                cluster = self.clusters[cluster_id]
                cluster["status"] = {"state": "deleting", "message": "Cluster is being deleted"}
                self._reads_left[cluster_id] = self.deleting_reads
                return 204, "application/json", b""
        raise ApiError(404, "not_found", "The resource you were accessing could not be found.")

    @staticmethod
    def _json(status: int, payload: dict) -> tuple[int, str, bytes]:
        return status, "application/json", json.dumps(payload).encode()

    def _create(self, body: dict) -> dict:
        for key in ("name", "region", "version", "node_pools"):
            if not body.get(key):
                raise ApiError(422, "unprocessable_entity", f"{key} is required")
        if any(c["name"] == body["name"] for c in self.clusters.values()):
            raise ApiError(422, "unprocessable_entity", "a cluster with this name already exists")
        if body["region"] not in REGIONS:
            raise ApiError(422, "unprocessable_entity", f"region {body['region']} is not valid")
        if body["version"] not in (*self.versions, "latest"):
            raise ApiError(422, "unprocessable_entity", f"version {body['version']} is not valid")
        for pool in body["node_pools"]:
            if pool.get("size") not in SIZES or not pool.get("name") or int(pool.get("count") or 0) < 1:
                raise ApiError(422, "unprocessable_entity", f"invalid node pool {pool}")
            if pool.get("auto_scale") and not (
                1 <= pool.get("min_nodes", 0) <= pool["count"] <= pool.get("max_nodes", 0)
            ):
                raise ApiError(
                    422, "unprocessable_entity", "node pool count must lie within min_nodes..max_nodes"
                )
        cluster = self._new_cluster(body)
        self._reads_left[cluster["id"]] = self.provisioning_reads
        if self.provisioning_reads == 0:
            self._ready(cluster)
        return json.loads(json.dumps(cluster))

    def _new_cluster(self, body: dict) -> dict:
        cluster_id = str(uuid.uuid4())
        now = _now()
        pools = []
        for pool in body["node_pools"]:
            pool_id = str(uuid.uuid4())
            pools.append(
                {
                    "id": pool_id,
                    "name": pool["name"],
                    "size": pool["size"],
                    "count": pool["count"],
                    "tags": [*pool.get("tags", []), "k8s", f"k8s:{cluster_id}", "k8s:worker"],
                    "labels": pool.get("labels"),
                    "taints": pool.get("taints", []),
                    "auto_scale": bool(pool.get("auto_scale")),
                    "min_nodes": pool.get("min_nodes", 0) if pool.get("auto_scale") else 0,
                    "max_nodes": pool.get("max_nodes", 0) if pool.get("auto_scale") else 0,
                    "nodes": [
                        {
                            "id": str(uuid.uuid4()),
                            "name": f"{pool['name']}-{secrets.token_hex(3)}",
                            "status": {"state": "provisioning"},
                            "droplet_id": str(400000000 + i),
                            "created_at": now,
                            "updated_at": now,
                        }
                        for i in range(pool["count"])
                    ],
                }
            )
        maintenance = {"start_time": "00:00", "day": "any", **(body.get("maintenance_policy") or {})}
        maintenance["duration"] = "4h0m0s"
        cluster = {
            "id": cluster_id,
            "name": body["name"],
            "region": body["region"],
            "version": body["version"],
            "cluster_subnet": "10.244.0.0/16",
            "service_subnet": "10.245.0.0/16",
            "vpc_uuid": body.get("vpc_uuid") or "c33931f2-a26a-4e61-b85c-4e95a2ec431b",
            "ipv4": "",
            "endpoint": "",
            "tags": [*(body.get("tags") or []), "k8s", f"k8s:{cluster_id}"],
            "node_pools": pools,
            "maintenance_policy": maintenance,
            "auto_upgrade": bool(body.get("auto_upgrade")),
            "surge_upgrade": bool(body.get("surge_upgrade")),
            "registry_enabled": False,
            "ha": bool(body.get("ha")),
            "status": {"state": "provisioning", "message": "provisioning"},
            "created_at": now,
            "updated_at": now,
        }
        self.clusters[cluster_id] = cluster
        return cluster

    @staticmethod
    def _ready(cluster: dict) -> None:
        cluster["status"] = {"state": "running", "message": ""}
        cluster["endpoint"] = f"https://{cluster['id']}.k8s.ondigitalocean.com"
        cluster["ipv4"] = "203.0.113.10"
        cluster["updated_at"] = _now()
        for pool in cluster["node_pools"]:
            for node in pool["nodes"]:
                node["status"] = {"state": "running"}

    def _observe(self, cluster: dict) -> dict | None:
        """A read of the cluster: its state now, then one step on (provisioning -> running,
        deleting -> gone). None once it is gone."""
        if cluster["id"] not in self.clusters:
            return None
        if cluster["status"]["state"] == "deleted":
            del self.clusters[cluster["id"]]
            return None
        seen = json.loads(json.dumps(cluster))
        left = self._reads_left.get(cluster["id"])
        if left is not None:
            if left <= 1:
                self._reads_left.pop(cluster["id"])
                if cluster["status"]["state"] == "provisioning":
                    self._ready(cluster)
                elif cluster["status"]["state"] == "deleting":
                    cluster["status"] = {"state": "deleted", "message": ""}
            else:
                self._reads_left[cluster["id"]] = left - 1
        return seen

    def _kubeconfig(self, cluster: dict, query: dict) -> bytes:
        if cluster["status"]["state"] != "running":
            raise ApiError(422, "unprocessable_entity", "cluster is not running yet")
        expiry = int(query.get("expiry_seconds") or 0) or 7 * 24 * 3600
        self.kubeconfig_expiries.append(expiry)
        token = "dop_v1_" + secrets.token_hex(32)
        self.issued_tokens.append(token)
        name = f"do-{cluster['region']}-{cluster['name']}"
        ca = base64.b64encode((self.folder / "ca.pem").read_bytes()).decode()
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "preferences": {},
            "clusters": [
                {"name": name, "cluster": {"server": cluster["endpoint"], "certificate-authority-data": ca}}
            ],
            "contexts": [{"name": name, "context": {"cluster": name, "user": f"{name}-admin"}}],
            "current-context": name,
            "users": [{"name": f"{name}-admin", "user": {"token": token}}],
        }
        return yaml.safe_dump(config, sort_keys=True).encode()


class _ApiHandler(BaseHTTPRequestHandler):
    """HTTP inside the TLS tunnel: the API itself."""

    protocol_version = "HTTP/1.1"
    server_version = "do-api-test-double"

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        status, content_type, payload = self.server.double.handle(self.command, self.path, self.headers, body)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if payload:
            self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

    def log_message(self, format, *args) -> None:  # the double records requests itself
        pass


class _ProxyHandler(BaseHTTPRequestHandler):
    """The proxy: CONNECT api.digitalocean.com:443 only, then TLS and _ApiHandler."""

    protocol_version = "HTTP/1.1"

    def do_CONNECT(self) -> None:
        if self.path != f"{API_HOST}:443":
            self.send_error(403, f"this test double only stands in for {API_HOST}:443")
            return
        self.send_response(200, "Connection Established")
        self.end_headers()
        self.wfile.flush()
        try:
            tunnel = self.server.tls.wrap_socket(self.connection, server_side=True)
        except (ssl.SSLError, OSError):
            self.close_connection = True
            return
        try:
            _ApiHandler(tunnel, self.client_address, self.server)
        finally:
            with contextlib.suppress(OSError):
                tunnel.close()
            self.close_connection = True

    def _refuse(self) -> None:
        self.send_error(405, "only CONNECT: this is an HTTPS proxy standing in for the DigitalOcean API")

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _refuse

    def log_message(self, format, *args) -> None:
        pass


# ---- a separate process, for Molecule ---------------------------------------------------


def _serve(folder: Path) -> int:
    token = (folder / "token").read_text().strip()
    double = DoApiDouble(folder, token).start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    _publish(folder, double.env)
    stop.wait()
    double.stop()
    return 0


def _publish(folder: Path, env: dict) -> None:
    """env.json appears whole or not at all: `start` reads it as soon as it exists, and a file
    written in place exists, empty, before its text is in it."""
    partial = folder / "env.json.partial"
    partial.write_text(json.dumps(env))
    partial.rename(folder / "env.json")


def _published_env(folder: Path) -> dict | None:
    """What `serve` published, or None before it has."""
    path = folder / "env.json"
    return json.loads(path.read_text()) if path.exists() else None


def _start(folder: Path, timeout: float = 30) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "env.json").unlink(missing_ok=True)
    with (folder / "double.log").open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "testkit.do_api_double", "serve", "--dir", str(folder)],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    (folder / "pid").write_text(str(proc.pid))
    deadline = time.monotonic() + timeout
    while (env := _published_env(folder)) is None:
        if proc.poll() is not None or time.monotonic() > deadline:
            print((folder / "double.log").read_text()[-2000:], file=sys.stderr)
            return 1
        time.sleep(0.05)
    print(json.dumps({"pid": proc.pid, **env}))
    return 0


def _stop(folder: Path, grace: float = 10) -> int:
    pid_file = folder / "pid"
    if not pid_file.exists():
        return 0
    pid = int(pid_file.read_text())
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    pid_file.unlink()
    (folder / "env.json").unlink(missing_ok=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["serve", "start", "stop"])
    parser.add_argument(
        "--dir", required=True, type=Path, help="state folder (token, env.json, requests.jsonl)"
    )
    args = parser.parse_args()
    return {"serve": _serve, "start": _start, "stop": _stop}[args.command](args.dir)


if __name__ == "__main__":
    sys.exit(main())
