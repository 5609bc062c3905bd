"""Rendering charts/todo for the chart tests: one place that knows how the environments
are rendered (release name, namespace from the inventory, the pinned Kubernetes version)."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "todo"
BIN = ROOT / ".tools" / "bin"
HELM = BIN / "helm"
RELEASE = "todo"
ENVIRONMENTS = ("local", "staging", "production")
SERVICES = ("api", "gateway", "notifier", "web")


def read_versions() -> dict[str, str]:
    versions = {}
    for raw in (ROOT / "versions.env").read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            versions[key.strip()] = value.strip().strip('"')
    return versions


KUBE_VERSION = read_versions()["KUBERNETES_VERSION"]


def values_file(env: str) -> Path:
    return ROOT / "inventories" / env / "values" / "todo.yaml"


def namespace_of(env: str) -> str:
    """The release namespace the inventory deploys the environment to (todo_namespace)."""
    path = ROOT / "inventories" / env / "group_vars" / "all" / "environment.yml"
    return yaml.safe_load(path.read_text())["todo_namespace"]


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([str(HELM), *args], capture_output=True, text=True, check=check)


def template_args(
    env: str | None, namespace: str, values: list[Path] = (), sets: list[str] = ()
) -> list[str]:
    args = [RELEASE, str(CHART), "--namespace", namespace, "--kube-version", KUBE_VERSION]
    if env:
        args += ["--values", str(values_file(env))]
    for path in values:
        args += ["--values", str(path)]
    for item in sets:
        args += ["--set", item]
    return args


@functools.cache
def render(env: str) -> str:
    """`helm template` of one environment, as `helm upgrade --install` would apply it."""
    result = helm("template", *template_args(env, namespace_of(env)), check=False)
    if result.returncode != 0:
        raise AssertionError(f"helm template failed for {env}:\n{result.stderr}")
    return result.stdout


def documents(text: str) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def docs(env: str) -> list[dict]:
    return documents(render(env))


def of_kind(items: list[dict], kind: str) -> list[dict]:
    return [doc for doc in items if doc["kind"] == kind]


def by_name(items: list[dict], kind: str, name: str) -> dict:
    matches = [doc for doc in items if doc["kind"] == kind and doc["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} found"
    return matches[0]


WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}


def pod_specs(items: list[dict]) -> list[tuple[str, dict]]:
    """Every pod spec a render can create: (kind/name, spec)."""
    found = []
    for doc in items:
        if doc["kind"] in WORKLOAD_KINDS:
            found.append((f"{doc['kind']}/{doc['metadata']['name']}", doc["spec"]["template"]["spec"]))
        elif doc["kind"] == "CronJob":
            found.append(
                (f"CronJob/{doc['metadata']['name']}", doc["spec"]["jobTemplate"]["spec"]["template"]["spec"])
            )
        elif doc["kind"] == "Pod":
            found.append((f"Pod/{doc['metadata']['name']}", doc["spec"]))
    return found


def containers(spec: dict) -> list[dict]:
    return [*spec.get("initContainers", []), *spec.get("containers", [])]


def secret_refs(items: list[dict]) -> set[tuple[str, str | None]]:
    """Every (Secret name, key) the render refers to: env, Dapr annotations and components,
    image pull Secrets, the Ingress TLS Secret. key None: the whole Secret."""
    refs: set[tuple[str, str | None]] = set()
    for _, spec in pod_specs(items):
        for container in containers(spec):
            for env in container.get("env", []):
                ref = (env.get("valueFrom") or {}).get("secretKeyRef")
                if ref:
                    refs.add((ref["name"], ref["key"]))
        for pull in spec.get("imagePullSecrets", []):
            refs.add((pull["name"], None))
    for doc in items:
        annotations = (doc.get("spec", {}).get("template", {}).get("metadata", {}) or {}).get(
            "annotations"
        ) or {}
        for key in ("dapr.io/api-token-secret", "dapr.io/app-token-secret"):
            if key in annotations:
                refs.add((annotations[key], "token"))
        if doc["kind"] == "Component":
            for item in doc["spec"].get("metadata", []):
                if "secretKeyRef" in item:
                    refs.add((item["secretKeyRef"]["name"], item["secretKeyRef"]["key"]))
        if doc["kind"] == "ConfigMap" and doc["metadata"]["name"].endswith("-dapr-resources"):
            for text in doc["data"].values():
                for item in (yaml.safe_load(text).get("spec") or {}).get("metadata", []):
                    if "secretKeyRef" in item:
                        refs.add((item["secretKeyRef"]["name"], item["secretKeyRef"]["key"]))
        if doc["kind"] == "Ingress":
            for tls in doc["spec"].get("tls", []):
                refs.add((tls["secretName"], None))
    return refs


def render_in(env: str, namespace: str, sets: list[str] = ()) -> list[dict]:
    """An environment rendered into another namespace (a test's own), uncached."""
    result = helm("template", *template_args(env, namespace, sets=sets), check=False)
    if result.returncode != 0:
        raise AssertionError(f"helm template failed for {env}:\n{result.stderr}")
    return documents(result.stdout)


class Applier:
    """Server-side apply of rendered objects through a kubernetes ApiClient (as Helm 3 and
    `kubectl apply --server-side` would send them), strict field validation, optional dry run."""

    def __init__(self, api_client, namespace: str, manager: str = "todo-chart-tests") -> None:
        from kubernetes import dynamic

        self.api_client = api_client
        self.dynamic = dynamic.DynamicClient(api_client)
        self.namespace = namespace  # the release namespace: Helm's default for namespaced objects
        self.manager = manager

    def apply(self, doc: dict, *, dry_run: bool = False) -> dict:
        resource = self.dynamic.resources.get(api_version=doc["apiVersion"], kind=doc["kind"])
        namespace = doc["metadata"].get("namespace", self.namespace) if resource.namespaced else None
        path = resource.path(name=doc["metadata"]["name"], namespace=namespace)
        query = [("fieldManager", self.manager), ("force", "true"), ("fieldValidation", "Strict")]
        if dry_run:
            query.append(("dryRun", "All"))
        response = self.api_client.call_api(
            path,
            "PATCH",
            body=doc,
            query_params=query,
            header_params={"Content-Type": "application/apply-patch+yaml", "Accept": "application/json"},
            auth_settings=["BearerToken"],
            _preload_content=False,
            _return_http_data_only=True,
        )
        import json

        return json.loads(response.data)
