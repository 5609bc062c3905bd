"""The platform's per-environment settings hold together (rung L0): the values files roles/ingress
and roles/dapr install with, the inventories' platform.yml, the roles' defaults, and what the
app chart expects of the platform (its Ingress class and issuer, the namespaces and labels its
NetworkPolicies allow, the Secrets its Dapr components read). What the roles do with them on a
real API server: the Molecule scenario `platform` (tests/molecule/test_molecule.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
ROLES = ROOT / "collections" / "ansible_collections" / "todo" / "cloud" / "roles"
ENVIRONMENTS = ("local", "staging", "production")
CLUSTER = ("staging", "production")  # namespaces of one DOKS cluster with one platform
RELEASES = ("ingress-nginx", "cert-manager", "dapr")


def load(path: Path):
    return yaml.safe_load(path.read_text())


def values(env: str, release: str) -> dict:
    return load(ROOT / "inventories" / env / "values" / f"{release}.yaml")


def platform_vars(env: str) -> dict:
    """The role defaults with the inventory's platform.yml on top (what a run sees)."""
    merged = {}
    for role in ("ingress", "dapr"):
        merged |= load(ROLES / role / "defaults" / "main.yml")
    return merged | load(ROOT / "inventories" / env / "group_vars" / "all" / "platform.yml")


def app_values(env: str) -> dict:
    chart = load(ROOT / "charts" / "todo" / "values.yaml")
    own = load(ROOT / "inventories" / env / "values" / "todo.yaml")

    def merge(base, top):
        if isinstance(base, dict) and isinstance(top, dict):
            return {k: merge(base.get(k), v) if k in base else v for k, v in top.items()} | {
                k: v for k, v in base.items() if k not in top
            }
        return top

    return merge(chart, own)


def resources_blocks(node, path=()):
    """(path, resources) of every `resources` mapping in a values tree."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "resources" and isinstance(value, dict):
                yield ".".join(path), value
            else:
                yield from resources_blocks(value, (*path, str(key)))


# ---- one platform for staging and production -----------------------------------------------


@pytest.mark.parametrize("release", RELEASES)
def test_l0_each_environment_has_values_for_each_platform_release(release):
    for env in ENVIRONMENTS:
        assert (ROOT / "inventories" / env / "values" / f"{release}.yaml").is_file(), f"{env}: {release}.yaml"
    # Staging and production share the cluster: the staging inventory links production's files,
    # so a platform run from either one installs the same thing.
    staging = ROOT / "inventories" / "staging" / "values" / f"{release}.yaml"
    assert staging.is_symlink()
    assert staging.resolve() == (ROOT / "inventories" / "production" / "values" / f"{release}.yaml").resolve()


def test_l0_staging_links_the_production_platform_settings():
    link = ROOT / "inventories" / "staging" / "group_vars" / "all" / "platform.yml"
    target = ROOT / "inventories" / "production" / "group_vars" / "all" / "platform.yml"
    assert link.is_symlink()
    assert link.resolve() == target.resolve()


# ---- ingress-nginx -------------------------------------------------------------------------


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_l0_ingress_redirects_http_with_301_and_keeps_sse_streams_open(env):
    config = values(env, "ingress-nginx")["controller"]["config"]
    assert config["ssl-redirect"] == "true"
    assert config["http-redirect-code"] == "301"  # the controller's default is 308
    assert int(config["proxy-read-timeout"]) >= 3600
    assert int(config["proxy-send-timeout"]) >= 3600
    # ConfigMap values are strings: a YAML true or 301 would not reach nginx as meant.
    assert all(isinstance(v, str) for v in config.values())


@pytest.mark.parametrize("env", CLUSTER)
def test_l0_cluster_ingress_sends_hsts_and_sees_real_client_ips(env):
    controller = values(env, "ingress-nginx")["controller"]
    config, service = controller["config"], controller["service"]
    assert config["hsts"] == "true"
    assert int(config["hsts-max-age"]) >= 31536000
    # Client IPs: a pass-through network load balancer and externalTrafficPolicy Local, and
    # therefore no PROXY protocol on either side (one without the other breaks every request).
    annotations = service["annotations"]
    assert service["type"] == "LoadBalancer"
    assert service["externalTrafficPolicy"] == "Local"
    do = "service.beta.kubernetes.io/do-loadbalancer-"
    assert annotations[do + "type"] == "REGIONAL_NETWORK"
    assert annotations[do + "name"]
    assert annotations.get(do + "enable-proxy-protocol", "false") == "false"
    assert config["use-proxy-protocol"] == "false"
    assert config["use-forwarded-headers"] == "false"
    # With Local, only nodes running a controller get traffic: two, on different nodes.
    assert controller["replicaCount"] >= 2
    assert controller["minAvailable"] >= 1
    spread = controller["topologySpreadConstraints"]
    assert [c["topologyKey"] for c in spread] == ["kubernetes.io/hostname"]


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_l0_ingress_controller_is_what_the_app_chart_expects(env):
    """The app's Ingress class, and the namespace and pod labels its NetworkPolicy lets in."""
    app = app_values(env)
    controller = values(env, "ingress-nginx")["controller"]
    release = next(r for r in platform_vars(env)["ingress_releases"] if r["name"] == "ingress-nginx")
    assert controller["ingressClassResource"]["name"] == app["ingress"]["className"]
    assert platform_vars(env)["ingress_class_name"] == app["ingress"]["className"]
    allowed = app["networkPolicy"]["ingressController"]
    assert allowed["namespace"] == release["namespace"]
    # The chart labels its pods app.kubernetes.io/name=<chart name>.
    assert allowed["podLabels"] == {"app.kubernetes.io/name": release["chart"]}


# ---- cert-manager and the issuers ----------------------------------------------------------


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_l0_cert_manager_installs_and_keeps_its_crds(env):
    crds = values(env, "cert-manager")["crds"]
    assert crds == {"enabled": True, "keep": True}


@pytest.mark.parametrize("env", CLUSTER)
def test_l0_cert_manager_metrics_reach_prometheus_for_the_certificate_alerts(env):
    rules = (ROLES / "monitoring" / "files" / "platform-rules.yaml").read_text()
    assert "certmanager_certificate_" in rules
    assert values(env, "cert-manager")["prometheus"] == {"enabled": True, "servicemonitor": {"enabled": True}}
    stack = values(env, "kube-prometheus-stack")["prometheus"]["prometheusSpec"]
    assert stack["serviceMonitorSelectorNilUsesHelmValues"] is False  # selects unlabelled monitors


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_l0_the_issuer_the_app_asks_for_is_one_the_platform_creates(env):
    settings = platform_vars(env)
    created = set()
    if settings["ingress_acme_issuers"]:
        created |= set(settings["ingress_acme_servers"])
    if settings["ingress_local_ca_issuer"]:
        created.add(settings["ingress_local_ca_name"])
    assert app_values(env)["ingress"]["clusterIssuer"] in created
    assert created, f"{env}: no ClusterIssuer at all"


def test_l0_lets_encrypt_issuers_are_production_and_staging():
    servers = platform_vars("production")["ingress_acme_servers"]
    assert servers == {
        "letsencrypt-production": "https://acme-v02.api.letsencrypt.org/directory",
        "letsencrypt-staging": "https://acme-staging-v02.api.letsencrypt.org/directory",
    }


# ---- Dapr ----------------------------------------------------------------------------------


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_l0_dapr_ha_per_environment_and_a_hardened_injector(env):
    chart = values(env, "dapr")
    ha = chart["global"]["ha"]
    assert ha["enabled"] is (env in CLUSTER)
    if ha["enabled"]:
        # Each block repeats the HA replica count (read by the cost table); they must agree.
        for block in ("dapr_operator", "dapr_sentry", "dapr_scheduler", "dapr_sidecar_injector"):
            assert chart[block]["replicaCount"] == ha["replicaCount"] == 3, block
    injector = chart["dapr_sidecar_injector"]
    assert injector["enabled"] is True
    assert injector["sidecarDropALLCapabilities"] is True


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_l0_mtls_and_daprsystem_have_one_home_the_role(env):
    """The values files leave mTLS, the trust domain and daprsystem to roles/dapr, which sets
    them in the chart and in the Configuration alike (vars/main.yml)."""
    chart = values(env, "dapr")
    assert "mtls" not in chart["global"]
    assert "dapr_config" not in chart
    role = load(ROLES / "dapr" / "vars" / "main.yml")
    assert role["_dapr_role_values"]["global"]["mtls"]["enabled"] is True
    assert role["_dapr_role_values"]["dapr_config"] == {"dapr_config_chart_included": False}
    assert role["_dapr_system_spec"]["mtls"]["enabled"] is True


def test_l0_dapr_checks_exactly_the_secrets_the_app_components_read():
    referenced: dict[str, set[str]] = {}
    for path in sorted((ROOT / "charts" / "todo" / "dapr").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "Component":
                for item in doc["spec"].get("metadata", []):
                    if "secretKeyRef" in item:
                        ref = item["secretKeyRef"]
                        referenced.setdefault(ref["name"], set()).add(ref["key"])
    checked = {
        s["name"]: {k["name"] if isinstance(k, dict) else k for k in s["keys"]}
        for s in load(ROLES / "dapr" / "defaults" / "main.yml")["dapr_component_secrets"]
    }
    assert checked == referenced
    assert referenced == {
        "todo-kafka": {"brokers", "username", "password"},
        "todo-state": {"connection-string"},
    }


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_l0_dapr_control_plane_is_where_the_app_network_policy_allows_it(env):
    allowed = app_values(env)["networkPolicy"]["daprControlPlane"]
    assert platform_vars(env)["dapr_namespace"] == allowed["namespace"]


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_l0_dapr_checks_the_environments_own_namespace(env):
    assert platform_vars(env)["dapr_app_namespaces"] == ["{{ todo_namespace }}"]
    assert platform_vars(env).get("dapr_allow_placeholders", False) is (env == "local")


# ---- every platform pod ----------------------------------------------------------------------


@pytest.mark.parametrize("env", ENVIRONMENTS)
@pytest.mark.parametrize("release", RELEASES)
def test_l0_every_platform_container_has_cpu_and_memory_requests_and_limits(env, release):
    """FR-009 for the platform's own pods: every resources block the values set is complete,
    and every workload the values size has one."""
    blocks = dict(resources_blocks(values(env, release)))
    assert blocks, f"{env}/{release}.yaml sizes nothing"
    for where, resources in blocks.items():
        for kind in ("requests", "limits"):
            assert set(resources.get(kind, {})) >= {"cpu", "memory"}, f"{env}/{release}.yaml {where}: {kind}"
