"""The single-node Kubernetes under the app (rung L3): kubelet, containerd and runc run an
image podman built; its answer reaches the host by pod IP and through a ClusterIP Service
(kube-proxy, iptables); CoreDNS resolves Services; metrics-server serves the metrics API an
HPA reads.

The cluster is the suite's (tests/e2e/conftest.py: `make up` started it through roles/cluster
with testkit/node.py); these tests use it beside the app, in a namespace of their own.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import httpx
import pytest

from testkit.controlplane import toolchain
from testkit.node import (
    DNS_IP,
    KUBERNETES_SERVICE_IP,
    NODE_IP,
    NODE_NAME,
    LocalCluster,
    build_image,
    status,
    wait_for,
)

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(1800)]

# A tiny HTTP server (the stand-in base's Python, standard library only): answers its pod's
# name and a value from the environment, and resolves names with the pod's resolver.
ECHO_SERVER = """\
import json, os, socket
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        url = urlparse(self.path)
        if url.path == "/resolve":
            name = parse_qs(url.query)["name"][0]
            try:
                body = {"name": name, "address": socket.gethostbyname(name)}
            except OSError as exc:
                body = {"name": name, "error": str(exc)}
        else:
            body = {"pod": socket.gethostname(), "answer": os.environ.get("ANSWER", "")}
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


print("echo server listening on 8080", flush=True)
ThreadingHTTPServer(("", 8080), Handler).serve_forever()
"""

ECHO_CONTAINERFILE = """\
FROM {base}
COPY echo.py /srv/echo.py
USER 10001:10001
ENTRYPOINT ["python3", "/srv/echo.py"]
"""


@pytest.fixture(scope="module")
def cluster(local_app):
    """The running local cluster (the suite's), adopted by its state folder."""
    return LocalCluster(workdir=Path(status()["dir"]))


@pytest.fixture(scope="module")
def apis(cluster):
    from kubernetes import client

    api = cluster.client()

    class Apis:
        api_client = api
        core = client.CoreV1Api(api)
        apps = client.AppsV1Api(api)

    return Apis


@pytest.fixture(scope="module")
def echo(cluster, apis, tmp_path_factory):
    """A two-replica Deployment of the echo image behind a ClusterIP Service, in its own namespace."""
    source = tmp_path_factory.mktemp("echo") / "echo.py"
    source.write_text(ECHO_SERVER)
    started = time.monotonic()
    image = build_image("echo-test", ECHO_CONTAINERFILE, {"echo.py": source})
    cluster.import_image(image)
    imported = time.monotonic() - started
    namespace = f"t-{uuid.uuid4().hex[:8]}"
    answer = uuid.uuid4().hex
    labels = {"app": "echo"}
    apis.core.create_namespace({"metadata": {"name": namespace}})
    container = {
        "name": "echo",
        "image": image,
        "imagePullPolicy": "Never",
        "env": [{"name": "ANSWER", "value": answer}],
        "ports": [{"containerPort": 8080, "name": "http"}],
        "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1},
        "resources": {
            "requests": {"cpu": "20m", "memory": "32Mi"},
            "limits": {"cpu": "200m", "memory": "64Mi"},
        },
    }
    apis.apps.create_namespaced_deployment(
        namespace,
        {
            "metadata": {"name": "echo"},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": labels},
                "template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}},
            },
        },
    )
    service = apis.core.create_namespaced_service(
        namespace,
        {
            "metadata": {"name": "echo"},
            "spec": {"selector": labels, "ports": [{"port": 80, "targetPort": "http"}]},
        },
    )
    created = time.monotonic()

    def ready_pods():
        pods = apis.core.list_namespaced_pod(namespace, label_selector="app=echo").items
        ready = [
            p
            for p in pods
            if any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
        ]
        return ready if len(ready) == 2 else None

    pods = wait_for("two echo pods Ready", ready_pods, 120, diagnose=lambda: cluster.tail("kubelet"))
    pod_start = time.monotonic() - created
    print(f"\necho image built and imported in {imported:.1f}s; two pods Ready in {pod_start:.1f}s")

    class Echo:
        pass

    Echo.namespace, Echo.answer, Echo.pods = namespace, answer, pods
    Echo.cluster_ip = service.spec.cluster_ip
    Echo.pod_start = pod_start
    yield Echo
    apis.core.delete_namespace(namespace)


def get_json(url: str) -> dict:
    response = httpx.get(url, timeout=5)
    response.raise_for_status()
    return response.json()


def test_l3_node_is_ready_with_kubelet_containerd_and_runc(cluster, apis):
    node = apis.core.read_node(NODE_NAME)
    info = node.status.node_info
    assert info.kubelet_version == toolchain.read_versions()["KUBERNETES_VERSION"]
    assert info.container_runtime_version.startswith("containerd://1.")
    assert {a.type: a.address for a in node.status.addresses}["InternalIP"] == NODE_IP
    assert any(c.type == "Ready" and c.status == "True" for c in node.status.conditions)
    assert "cpu" in node.status.allocatable
    # the `kubernetes` Service leads to the API server at the node's address
    endpoints = apis.core.read_namespaced_endpoints("kubernetes", "default")
    assert [a.ip for a in endpoints.subsets[0].addresses] == [NODE_IP]


def test_l3_pod_answers_by_pod_ip_and_through_a_cluster_ip_service(echo):
    names = {p.metadata.name for p in echo.pods}
    for pod in echo.pods:
        body = get_json(f"http://{pod.status.pod_ip}:8080/")
        assert body == {"pod": pod.metadata.name, "answer": echo.answer}
    # kube-proxy writes a new Service's rules asynchronously: wait for the first answer
    wait_for("the Service's first answer", lambda: get_json(f"http://{echo.cluster_ip}/"), 30)
    answered = {get_json(f"http://{echo.cluster_ip}/")["pod"] for _ in range(10)}
    assert answered <= names
    assert answered
    assert echo.pod_start < 90, f"pods took {echo.pod_start:.0f}s to become Ready"


def test_l3_cluster_dns_resolves_the_api_server_and_services(echo):
    pod_ip = echo.pods[0].status.pod_ip
    expected = {
        "kubernetes.default.svc.cluster.local": KUBERNETES_SERVICE_IP,
        f"echo.{echo.namespace}.svc.cluster.local": echo.cluster_ip,
        "echo": echo.cluster_ip,  # the pod's search path (kubelet's clusterDNS and domain)
        "kube-dns.kube-system": DNS_IP,
    }
    for name, address in expected.items():
        assert get_json(f"http://{pod_ip}:8080/resolve?name={name}") == {"name": name, "address": address}


def test_l3_pod_logs_come_from_the_kubelet(apis, echo):
    pod = echo.pods[0]
    logs = apis.core.read_namespaced_pod_log(pod.metadata.name, echo.namespace)
    assert "echo server listening on 8080" in logs


def test_l3_metrics_api_reports_node_and_pod_usage(apis, echo):
    def metrics(path: str) -> list[dict]:
        data = apis.api_client.call_api(
            f"/apis/metrics.k8s.io/v1beta1/{path}",
            "GET",
            auth_settings=["BearerToken"],
            response_type="object",
            _return_http_data_only=True,
        )
        return data["items"]

    nodes = wait_for("node metrics", lambda: metrics("nodes"), 90, interval=2)
    assert nodes[0]["metadata"]["name"] == NODE_NAME
    assert nodes[0]["usage"]["cpu"] and nodes[0]["usage"]["memory"]
    pods = wait_for(
        "pod metrics of both echo pods",
        lambda: (found := metrics(f"namespaces/{echo.namespace}/pods")) and len(found) == 2 and found,
        90,
        interval=2,
    )
    assert {p["metadata"]["name"] for p in pods} == {p.metadata.name for p in echo.pods}


def test_l3_the_node_state_lives_in_its_own_folder(cluster):
    """containerd's socket, root and state, kubelet's root and the CNI configuration are private."""
    state = Path(cluster.workdir)
    assert cluster.containerd_socket.is_socket()
    assert str(cluster.containerd_socket).startswith(str(state))
    assert (state / "kubelet" / "pods").is_dir()
    assert (state / "cni" / "net.d" / "10-todo.conflist").is_file()
