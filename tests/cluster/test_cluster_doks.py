"""roles/cluster, provider doks: real `ansible-playbook` runs of playbooks/cluster.yml and
playbooks/teardown.yml with the staging inventory, community.digitalocean's modules and
ansible.builtin.uri unmodified, against the DigitalOcean API TEST DOUBLE
(testkit/do_api_double.py) reached through HTTPS_PROXY. Rung L1-ish: real module code
against a test double of the one endpoint this machine cannot reach; the same scenario runs
against DigitalOcean itself in the online tier (extensions/molecule/cluster_doks_online)."""

from __future__ import annotations

import base64
import json
import os
import stat
import time

import pytest
import yaml

pytestmark = pytest.mark.integration

POOL = {
    "name": "todo-pool",
    "size": "s-4vcpu-8gb",
    "count": 2,
    "auto_scale": True,
    "min_nodes": 2,
    "max_nodes": 3,
}


def pool(**change) -> list[str]:
    """Extra vars: the inventory's node pool with `change` applied."""
    return ["-e", json.dumps({"cluster_doks_node_pool": {**POOL, **change}})]


def secrets_of(do_api) -> list[str]:
    """Everything that must never appear in a log: the API token, every kubeconfig token the
    double issued, and the kubeconfig's CA data."""
    ca = base64.b64encode(do_api.ca_file.read_bytes()).decode()
    return [do_api.token, *do_api.issued_tokens, ca[:60]]


def test_L1_creates_when_absent_and_a_second_run_changes_nothing(run_playbook, do_api, kubeconfig):
    first = run_playbook("cluster", json_output=False, verbosity=3)
    assert first.rc == 0, first.output[-4000:]
    assert "changed=3" in first.output  # the cluster, the kubeconfig's folder, the kubeconfig

    # Created once, as the inventory describes it, then waited for (provisioning -> running).
    [create] = do_api.calls("POST", r"^/v2/kubernetes/clusters$")
    body = create["body"]
    assert (body["name"], body["region"], body["version"]) == ("todo", "fra1", do_api.versions[0])
    assert body["node_pools"] == [POOL]
    assert (body["auto_upgrade"], body["surge_upgrade"], body["ha"]) == (False, True, False)
    assert body["maintenance_policy"] == {"start_time": "03:00", "day": "sunday"}
    [cluster] = do_api.clusters.values()
    assert cluster["status"]["state"] == "running"
    assert all(r["auth"] == "ok" for r in do_api.requests)

    # A short-lived kubeconfig: expiry_seconds asked for, private file, the inventory's context.
    [fetch] = do_api.calls("GET", r"/kubeconfig$")
    assert fetch["query"] == {"expiry_seconds": "3600"}
    assert stat.S_IMODE(kubeconfig.stat().st_mode) == 0o600
    assert stat.S_IMODE(kubeconfig.parent.stat().st_mode) == 0o700
    written = yaml.safe_load(kubeconfig.read_text())
    assert written["current-context"] == "do-todo"
    assert [c["name"] for c in written["contexts"]] == ["do-todo"]
    assert written["clusters"][0]["cluster"]["server"] == cluster["endpoint"]
    assert written["users"][0]["user"]["token"] == do_api.issued_tokens[0]

    do_api.reset_log()
    second = run_playbook("cluster")
    assert second.rc == 0, second.output[-4000:]
    assert second.stats()["changed"] == 0, second.changed_tasks()
    assert do_api.calls("POST") == [] and do_api.calls("GET", r"/kubeconfig$") == []
    assert len(do_api.issued_tokens) == 1

    # Never logged, at -vvv nor in the JSON results.
    for run in (first, second):
        for secret in secrets_of(do_api):
            assert secret not in run.output


def test_L1_adopts_an_existing_cluster_without_creating(run_playbook, do_api, kubeconfig):
    existing = do_api.seed_cluster("todo", region="fra1", node_pools=[POOL], maintenance_policy={})
    run = run_playbook("cluster")
    assert run.rc == 0, run.output[-4000:]
    assert do_api.calls("POST") == []
    assert do_api.calls("GET", r"/v2/kubernetes/options") == []
    assert yaml.safe_load(kubeconfig.read_text())["clusters"][0]["cluster"]["server"] == existing["endpoint"]
    assert run.report["plays"][0]["tasks"]  # JSON results parsed
    assert run.stats()["changed"] == 2  # the kubeconfig's folder and file


def test_L1_refuses_to_adopt_a_cluster_that_differs(run_playbook, do_api, kubeconfig):
    do_api.seed_cluster("todo", region="fra1", node_pools=[{**POOL, "size": "s-2vcpu-4gb", "max_nodes": 4}])
    run = run_playbook("cluster")
    assert run.rc != 0
    assert "Cluster todo exists but differs from the inventory" in run.output
    assert "node pool: inventory todo-pool s-4vcpu-8gb autoscale=True 2..3, " in run.output
    assert "cluster todo-pool s-2vcpu-4gb autoscale=True 2..4" in run.output
    assert do_api.calls("POST") == [] and not kubeconfig.exists()


def test_L1_renews_only_the_kubeconfig_with_the_kubeconfig_tag(run_playbook, do_api, kubeconfig):
    """--tags kubeconfig on an adopted cluster: an expired file is replaced, nothing else runs."""
    existing = do_api.seed_cluster("todo", region="fra1", node_pools=[POOL])
    kubeconfig.parent.mkdir(mode=0o700)
    old = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "do-todo",
        "clusters": [{"name": "c", "cluster": {"server": existing["endpoint"]}}],
        "contexts": [{"name": "do-todo", "context": {"cluster": "c", "user": "u"}}],
        "users": [{"name": "u", "user": {"token": "expired-token"}}],
    }
    kubeconfig.write_text(yaml.safe_dump(old))
    kubeconfig.chmod(0o600)
    an_hour_ago = time.time() - 3600
    os.utime(kubeconfig, (an_hour_ago, an_hour_ago))

    run = run_playbook("cluster", "--tags", "kubeconfig")
    assert run.rc == 0, run.output[-4000:]
    assert len(do_api.calls("GET", r"/kubeconfig$")) == 1
    assert yaml.safe_load(kubeconfig.read_text())["users"][0]["user"]["token"] == do_api.issued_tokens[0]
    ran = {task["task"]["name"] for task in run.report["plays"][0]["tasks"]}
    assert "The node pool fits the budget at its largest" not in ran
    assert "Create the cluster" not in ran


def test_L1_never_replaces_a_kubeconfig_with_other_contexts(run_playbook, do_api, kubeconfig):
    do_api.seed_cluster("todo", region="fra1", node_pools=[POOL])
    kubeconfig.parent.mkdir(mode=0o700)
    mine = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "work",
        "contexts": [{"name": "work", "context": {"cluster": "w", "user": "w"}}],
        "clusters": [],
        "users": [],
    }
    kubeconfig.write_text(yaml.safe_dump(mine))
    run = run_playbook("cluster")
    assert run.rc != 0
    assert "holds other contexts (work)" in run.output
    assert yaml.safe_load(kubeconfig.read_text()) == mine
    assert do_api.calls("GET", r"/kubeconfig$") == []


def test_L1_check_mode_changes_nothing(run_playbook, do_api, kubeconfig):
    run = run_playbook("cluster", "--check")
    assert run.rc == 0, run.output[-4000:]
    assert "would be created in fra1" in run.output
    assert do_api.calls("POST") == [] and do_api.clusters == {}
    # check mode still asks DigitalOcean whether region, version and size are valid
    assert len(do_api.calls("GET", r"/v2/kubernetes/options$")) == 1
    assert not kubeconfig.exists()


@pytest.mark.parametrize(
    ("extra", "credential", "message"),
    [
        (
            [
                "-e",
                "cluster_provider=gke",
                "-e",
                "cluster_doks_region=mars1",
                "-e",
                '{"cluster_doks_node_pool": {"name": "p", "size": "s-2vcpu-4gb", "count": "three"}}',
            ],
            "double",
            [
                "value of cluster_provider must be one of: doks",
                "got: gke",
                "value of cluster_doks_region must be one of:",
                "three",
            ],
        ),
        (
            pool(size="s-1vcpu-512mb"),
            "double",
            ["Unknown node size s-1vcpu-512mb: the role knows s-2vcpu-4gb, s-4vcpu-8gb, s-8vcpu-16gb"],
        ),
        (
            pool(min_nodes=5),
            "double",
            ["need 1 <= min_nodes <= count <= max_nodes", "(got min_nodes=5, count=2, max_nodes=3)"],
        ),
        (
            pool(max_nodes=4),
            "double",
            ["could cost $192 a month (4 x s-4vcpu-8gb), over cluster_doks_node_budget_usd_month ($150)"],
        ),
        ([], None, ["No DigitalOcean API token: export DIGITALOCEAN_ACCESS_TOKEN"]),
        (
            [],
            "not-the-token",
            ["DigitalOcean API: Failed to login using API token, please verify validity of API token."],
        ),
    ],
    ids=["argument-specs", "unknown-size", "min-over-count", "over-budget", "no-token", "wrong-token"],
)
def test_L1_bad_arguments_fail_clearly_before_anything_changes(
    run_playbook, do_api, kubeconfig, extra, credential, message
):
    run = run_playbook("cluster", *extra, credential=credential)
    assert run.rc != 0
    for part in message:
        assert part in run.output, run.output[-3000:]
    assert do_api.calls("POST") == [] and not kubeconfig.exists()
    if credential not in ("double", None):
        assert credential not in run.output
        assert {r["auth"] for r in do_api.requests} == {"invalid"}


def test_L1_teardown_refuses_without_the_typed_confirmation(run_playbook, do_api):
    existing = do_api.seed_cluster("todo", region="fra1", node_pools=[POOL])
    for extra in ([], ["-e", "cluster_teardown_confirm=yes"]):
        run = run_playbook("teardown", *extra)
        assert run.rc != 0
        assert "Refusing to delete cluster todo" in run.output
        assert "-e cluster_teardown_confirm=todo" in run.output
    assert do_api.requests == []  # refused before any call
    assert existing["id"] in do_api.clusters


def test_L1_teardown_with_confirmation_deletes_the_cluster_and_what_it_created(run_playbook, do_api):
    existing = do_api.seed_cluster("todo", region="fra1", node_pools=[POOL])
    do_api.seed_associated(existing["id"], load_balancers=["a1b2c3-ingress"], volumes=["pvc-prometheus"])
    run = run_playbook("teardown", "-e", "cluster_teardown_confirm=todo", json_output=False, verbosity=2)
    assert run.rc == 0, run.output[-4000:]
    assert "with load balancers [a1b2c3-ingress], volumes [pvc-prometheus]" in " ".join(run.output.split())
    [delete] = do_api.calls("DELETE")
    assert (
        delete["path"]
        == f"/v2/kubernetes/clusters/{existing['id']}/destroy_with_associated_resources/dangerous"
    )
    assert do_api.clusters == {}
    assert do_api.token not in run.output

    again = run_playbook("teardown", "-e", "cluster_teardown_confirm=todo")
    assert again.rc == 0 and again.stats()["changed"] == 0
    assert "Cluster todo does not exist: nothing to delete." in again.output


def test_L1_the_double_answers_only_for_the_api_and_only_with_the_token(do_api):
    """The test double itself: 401 without (or with a wrong) bearer token, as DigitalOcean
    answers; 404 for endpoints the role does not call; no tunnel to any other host."""
    import ssl

    import httpx

    proxy, trust = do_api.env["HTTPS_PROXY"], ssl.create_default_context(cafile=do_api.ca_file)
    with httpx.Client(proxy=proxy, verify=trust, timeout=10) as client:
        assert client.get("https://api.digitalocean.com/v2/account").status_code == 401
        wrong = client.get("https://api.digitalocean.com/v2/account", headers={"Authorization": "Bearer x"})
        assert wrong.status_code == 401 and wrong.json()["id"] == "Unauthorized"
        auth = {"Authorization": f"Bearer {do_api.token}"}
        assert client.get("https://api.digitalocean.com/v2/account", headers=auth).status_code == 200
        assert client.get("https://api.digitalocean.com/v2/droplets", headers=auth).status_code == 404
    assert [(r["path"], r["auth"], r["status"]) for r in do_api.requests] == [
        ("/v2/account", "missing", 401),
        ("/v2/account", "invalid", 401),
        ("/v2/account", "ok", 200),
        ("/v2/droplets", "ok", 404),
    ]
    with httpx.Client(proxy=proxy, timeout=10) as client, pytest.raises(httpx.ProxyError):
        client.get("https://example.com/")
