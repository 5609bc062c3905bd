"""The chart's alert rules and dashboards (rung L0, with Prometheus' own promtool): the rules
parse, every alert has unit tests that make it fire and keep it quiet (FR-020: the error-rate
alert after 5 minutes), every dashboard query parses, and every metric they name is one the
services export (or kube-state-metrics / cAdvisor)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from chartlib import ENVIRONMENTS, docs, of_kind

pytestmark = pytest.mark.unit

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
TESTS = Path(__file__).with_name("promtool") / "alerts.test.yaml"

# Metrics the platform's exporters provide (kube-state-metrics and the kubelet's cAdvisor);
# the services' own metrics are checked against their code instead.
PLATFORM_METRICS = {
    "kube_pod_container_status_waiting_reason",
    "kube_pod_container_status_last_terminated_reason",
    "kube_pod_container_status_restarts_total",
    "kube_pod_container_resource_requests",
    "kube_pod_container_resource_limits",
    "kube_deployment_status_replicas_available",
    "kube_horizontalpodautoscaler_status_desired_replicas",
    "kube_namespace_status_phase",
    "container_cpu_usage_seconds_total",
    "container_memory_working_set_bytes",
    "container_oom_events_total",
}


def rules(env: str = "production") -> dict:
    (rule,) = of_kind(docs(env), "PrometheusRule")
    return rule["spec"]


def dashboards(env: str = "production") -> list[dict]:
    found = []
    for cm in of_kind(docs(env), "ConfigMap"):
        if cm["metadata"].get("labels", {}).get("grafana_dashboard") == "1":
            found.extend(json.loads(body) for body in cm["data"].values())
    return found


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, cwd=cwd, check=False)


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_promtool_checks_the_rules(env, tmp_path):
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rules(env)))
    result = promtool("check", "rules", "--lint=all", "--lint-fatal", "rules.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 4 rules found" in result.stdout


def test_promtool_unit_tests_pass(tmp_path):
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rules("production")))
    shutil.copy(TESTS, tmp_path / TESTS.name)
    result = promtool("test", "rules", TESTS.name, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_case_that_fires_and_one_that_does_not():
    alerts = {rule["alert"] for group in rules()["groups"] for rule in group["rules"] if "alert" in rule}
    assert alerts == {"TodoHighErrorRate", "TodoPodCrashLooping", "TodoContainerOOMKilled", "TodoOutboxStuck"}
    cases = [case for test in yaml.safe_load(TESTS.read_text())["tests"] for case in test["alert_rule_test"]]
    fires = {case["alertname"] for case in cases if case["exp_alerts"]}
    quiet = {case["alertname"] for case in cases if not case["exp_alerts"]}
    assert fires == alerts
    assert quiet == alerts


def test_the_error_rate_alert_waits_five_minutes():
    (rule,) = [r for g in rules()["groups"] for r in g["rules"] if r.get("alert") == "TodoHighErrorRate"]
    assert rule["for"] == "5m"
    assert "http_request_errors_total" in rule["expr"] and "http_requests_total" in rule["expr"]


def dashboard_queries(env: str = "production") -> list[str]:
    queries = []
    for dashboard in dashboards(env):
        for panel in dashboard["panels"]:
            queries.extend(target["expr"] for target in panel.get("targets", []))
    return queries


def test_every_dashboard_query_parses(tmp_path):
    queries = dashboard_queries()
    assert len(queries) >= 25
    group = {
        "name": "dashboard-queries",
        "rules": [
            {
                "record": f"dashboard:query_{i}",
                "expr": q.replace("$__rate_interval", "5m").replace("$namespace", "x"),
            }
            for i, q in enumerate(queries)
        ],
    }
    (tmp_path / "queries.yaml").write_text(yaml.safe_dump({"groups": [group]}))
    result = promtool("check", "rules", "queries.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def exported_metrics() -> set[str]:
    """The sample names the services' metric classes export (one registry each, as in the apps)."""
    from prometheus_client import CollectorRegistry
    from todo_gateway.metrics import GatewayMetrics
    from todo_notifier.metrics import NotifierMetrics
    from todo_shared.metrics import HttpMetrics
    from todo_shared.outbox import OutboxMetrics

    registry = CollectorRegistry()
    HttpMetrics(registry)
    OutboxMetrics(registry)
    GatewayMetrics(registry)
    NotifierMetrics(registry)
    names = set()
    for family in registry.collect():
        names.add(family.name)
        if family.type == "counter":
            names.add(f"{family.name}_total")
        if family.type == "histogram":
            names.update(f"{family.name}_{suffix}" for suffix in ("bucket", "sum", "count"))
    return names


def test_every_metric_named_by_alerts_and_dashboards_exists():
    texts = [r["expr"] for g in rules()["groups"] for r in g["rules"]] + dashboard_queries()
    used = {name for text in texts for name in re.findall(r"\b([a-z_:][a-z0-9_:]*)\{", text)}
    assert {"http_requests_total", "gateway_connections_open", "outbox_backlog_events"} <= used
    exported = exported_metrics()
    unknown = {name for name in used if name not in exported and name not in PLATFORM_METRICS}
    assert unknown == set()
