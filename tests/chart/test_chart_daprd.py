"""The chart's explicit-sidecar mode with real daprd (rungs L2-L3 for Dapr): the daprd
flags, components and Configuration exactly as the local render gives them, reading the app's
Secrets from a real API server through the Kubernetes secret store, as the pod's own
ServiceAccount with the chart's Role, and connecting to a real Kafka (SASL_SSL/SCRAM) and
PostgreSQL. What differs from a pod: ports are free loopback ports, the files are folders
laid out like the ConfigMap volumes, and the token comes from the TokenRequest API in a kubeconfig
instead of the projected volume (daprd falls back from in-cluster config to KUBECONFIG).
"""

from __future__ import annotations

import base64
import json
import os
import ssl

import httpx
import pytest
import yaml
from chartlib import BIN, Applier, by_name, of_kind, render_in

from testkit.dapr import Process
from testkit.procs import free_port

pytestmark = pytest.mark.integration

# The app ids and the components each one's daprd must load (dapr/*.yaml scopes).
EXPECTED = {
    "api": {"pubsub", "secretstore"},
    "notifier": {"pubsub", "statestore", "secretstore"},
    "gateway": {"pubsub-fanout", "secretstore"},
    "web": set(),
}
PORT_FLAGS = (
    "--dapr-http-port",
    "--dapr-grpc-port",
    "--dapr-internal-grpc-port",
    "--dapr-public-port",
    "--metrics-port",
    "--app-port",
)


def secret(name: str, data: dict[str, str]) -> dict:
    return {
        "metadata": {"name": name},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }


@pytest.fixture(scope="module")
def cluster_side(k8s, kafka, postgres, tmp_path_factory):
    """The local render's ServiceAccounts, Roles and bindings in a namespace holding the Secrets
    the components name (pointing at the session's Kafka and PostgreSQL), plus one they must not read."""
    import uuid

    namespace = f"t-{uuid.uuid4().hex[:8]}"
    k8s.core.create_namespace({"metadata": {"name": namespace}})
    items = render_in("local", namespace)
    applier = Applier(k8s.api_client, namespace)
    for doc in items:
        if doc["kind"] in ("ServiceAccount", "Role", "RoleBinding"):
            applier.apply(doc)
    kafka_secret = {"brokers": kafka.bootstrap, "username": kafka.username, "password": kafka.password}
    k8s.core.create_namespaced_secret(namespace, secret("todo-kafka", kafka_secret))
    dsn = postgres.create_database(f"dapr_{uuid.uuid4().hex[:8]}")
    k8s.core.create_namespaced_secret(namespace, secret("todo-state", {"connection-string": dsn}))
    k8s.core.create_namespaced_secret(namespace, secret("todo-local-auth", {"jwt-signing-key": "x" * 40}))
    folder = tmp_path_factory.mktemp("daprd")
    configmap_volume(folder / "resources", by_name(items, "ConfigMap", "todo-dapr-resources")["data"])
    configmap_volume(folder / "config", by_name(items, "ConfigMap", "todo-dapr-config")["data"])
    yield namespace, items, folder
    k8s.core.delete_namespace(namespace)


def configmap_volume(target, data: dict[str, str]) -> None:
    """The files as the kubelet lays out a ConfigMap volume: a timestamped folder, `..data`
    pointing at it, and one symlink per key (daprd must skip the rest and follow the links)."""
    stamp = target / "..2026_01_01_00_00_00.000000000"
    stamp.mkdir(parents=True)
    for key, text in data.items():
        (stamp / key).write_text(text)
    (target / "..data").symlink_to(stamp.name)
    for key in data:
        (target / key).symlink_to(f"..data/{key}")


def kubeconfig_for(k8s, controlplane, namespace: str, service_account: str, path):
    """A kubeconfig holding a short-lived token of the ServiceAccount (TokenRequest API)."""
    request = k8s.core.create_namespaced_service_account_token(
        service_account, namespace, {"spec": {"expirationSeconds": 3600}}
    )
    admin = yaml.safe_load(controlplane.kubeconfig_path.read_text())
    cluster = admin["clusters"][0]
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [cluster],
                "users": [{"name": "sa", "user": {"token": request.status.token}}],
                "contexts": [
                    {
                        "name": "sa",
                        "context": {"cluster": cluster["name"], "user": "sa", "namespace": namespace},
                    }
                ],
                "current-context": "sa",
            }
        )
    )
    path.chmod(0o600)
    return request.status.token


def sidecar_argv(items: list[dict], service: str, folder, ports: dict[str, int], scheduler: str) -> list[str]:
    deployment = by_name(items, "Deployment", f"todo-{service}")
    (daprd,) = [c for c in deployment["spec"]["template"]["spec"]["initContainers"] if c["name"] == "daprd"]
    local = {
        **{flag: str(port) for flag, port in ports.items()},
        "--resources-path": str(folder / "resources"),
        "--config": str(folder / "config" / "configuration.yaml"),
        "--scheduler-host-address": scheduler,
    }
    argv = [str(BIN / "daprd")]
    for arg in daprd["args"]:
        flag, _, _ = arg.partition("=")
        argv.append(f"{flag}={local[flag]}" if flag in local else arg)
    # Loopback only on a shared machine (in the pod these listen on the pod's addresses).
    argv += [
        "--dapr-internal-grpc-listen-address=127.0.0.1",
        "--dapr-public-listen-address=127.0.0.1",
        "--metrics-listen-address=127.0.0.1",
    ]
    return argv


def get(url: str, headers: dict | None = None, context=None) -> tuple[int | None, bytes]:
    """GET on loopback or the test API server: (status, body); status None when nothing answers."""
    try:
        response = httpx.get(url, headers=headers, timeout=5, verify=context or True)
    except httpx.HTTPError:
        return None, b""
    return response.status_code, response.content if response.is_success else b""


@pytest.mark.parametrize("service", sorted(EXPECTED))
def test_explicit_daprd_loads_its_components_with_the_charts_rbac(
    service, cluster_side, k8s, controlplane, kafka, dapr, tmp_path
):
    namespace, items, folder = cluster_side
    kubeconfig = tmp_path / "kubeconfig"
    token = kubeconfig_for(k8s, controlplane, namespace, f"todo-{service}", kubeconfig)
    ports = {flag: free_port() for flag in PORT_FLAGS}
    api_token = os.urandom(16).hex()
    env = {
        "NAMESPACE": namespace,
        "KUBECONFIG": str(kubeconfig),
        "DAPR_API_TOKEN": api_token,
        "APP_API_TOKEN": os.urandom(16).hex(),
        "SSL_CERT_FILE": str(kafka.ca_file),
    }
    argv = sidecar_argv(items, service, folder, ports, dapr.scheduler.address)
    process = Process(f"daprd {service}", argv, tmp_path / "daprd.log", env=env)
    process.start()
    try:
        public = f"http://127.0.0.1:{ports['--dapr-public-port']}"
        process.wait_until(lambda: get(f"{public}/v1.0/healthz/outbound")[0] == 204, "outbound healthz", 60)
        http = f"http://127.0.0.1:{ports['--dapr-http-port']}"
        assert get(f"{http}/v1.0/metadata")[0] == 401  # the API token is required
        status, body = get(f"{http}/v1.0/metadata", {"dapr-api-token": api_token})
        assert status == 200
        metadata = json.loads(body)
        loaded = {c["name"] for c in metadata.get("components", [])}
        assert loaded == EXPECTED[service], process.log_file.read_text()[-3000:]
        assert metadata["id"] == service
        # The apps cannot read Secrets through Dapr's secrets API (Configuration secret scopes).
        if "secretstore" in loaded:
            denied, _ = get(f"{http}/v1.0/secrets/secretstore/todo-kafka", {"dapr-api-token": api_token})
            assert denied == 403
    finally:
        process.stop()
    # The ServiceAccount's token reads exactly the component Secrets, nothing else.
    auth = {"Authorization": f"Bearer {token}"}
    server = yaml.safe_load(kubeconfig.read_text())["clusters"][0]["cluster"]["server"]
    context = ssl.create_default_context(cafile=str(controlplane.workdir / "ca.crt"))
    statuses = {
        name: get(f"{server}/api/v1/namespaces/{namespace}/secrets/{name}", auth, context)[0]
        for name in ("todo-kafka", "todo-state", "todo-local-auth")
    }
    assert set(statuses.values()) <= {200, 403}
    readable = {name for name, status in statuses.items() if status == 200}
    wanted = {
        "api": {"todo-kafka"},
        "notifier": {"todo-kafka", "todo-state"},
        "gateway": {"todo-kafka"},
        "web": set(),
    }
    assert readable == wanted[service]
    roles = {r["metadata"]["name"] for r in of_kind(items, "Role")}
    assert (f"todo-{service}-dapr-secrets" in roles) == bool(wanted[service])
