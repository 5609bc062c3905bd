#!/usr/bin/python
# Copyright: (c) 2026, Todo platform team
# Apache License 2.0
"""Ansible module todo.cloud.rollout_wait."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: rollout_wait
short_description: Wait for Deployments, StatefulSets and DaemonSets to finish rolling out, and say why not
version_added: 0.1.0
author:
  - Todo platform team
description:
  - Waits until every selected Deployment, StatefulSet and DaemonSet in a namespace has observed its
    latest generation and has all its replicas updated, ready and available, with no old pod left.
  - Fails fast, long before O(timeout), when the newest revision cannot succeed, naming the workload,
    pod, container and reason; C(ProgressDeadlineExceeded), a C(ReplicaFailure) such as a rejected pod
    or an exceeded quota, C(CrashLoopBackOff) past O(crash_loop_restarts), C(ErrImagePull) and
    C(ImagePullBackOff), C(CreateContainerConfigError) and other container creation errors, pods that
    run but do not pass readiness within O(readiness_window), and pods no node can take for
    O(unschedulable_grace) seconds.
  - Only pods of the newest revision are judged, so a failing old ReplicaSet does not fail a good rollout.
  - In check mode it reads the current state once and reports it without waiting or failing.
  - Selection by O(name), O(label_selector) and O(release) combine with AND; with none of them every
    workload of O(kinds) in the namespace is selected. Selecting nothing is an error.
extends_documentation_fragment:
  - kubernetes.core.k8s_auth_options
options:
  namespace:
    description: Namespace of the workloads.
    type: str
    required: true
  name:
    description: Names of the workloads to wait for. Each must exist as one of O(kinds).
    type: list
    elements: str
    default: []
  label_selector:
    description: A label selector, as in C(kubectl get -l), e.g. C(app.kubernetes.io/part-of=todo,tier!=db).
    type: str
  release:
    description:
      - Helm release name; selects the workloads Helm annotated with C(meta.helm.sh/release-name).
    type: str
  kinds:
    description: Workload kinds to consider.
    type: list
    elements: str
    choices: [Deployment, StatefulSet, DaemonSet]
    default: [Deployment, StatefulSet, DaemonSet]
  timeout:
    description: Seconds to wait for all workloads before failing.
    type: int
    default: 300
  fail_fast:
    description:
      - Fail as soon as a rollout is found unable to succeed. With V(false), only report the
        diagnosis when O(timeout) expires.
    type: bool
    default: true
  crash_loop_restarts:
    description:
      - A container of the newest revision that crashed and restarted this many times fails the rollout.
    type: int
    default: 2
  readiness_window:
    description: Seconds a pod of the newest revision may run without passing readiness.
    type: int
    default: 90
  unschedulable_grace:
    description:
      - Seconds a pod of the newest revision may stay unschedulable. Raise it where a cluster autoscaler
        adds nodes (several minutes on DOKS).
    type: int
    default: 30
  poll_interval:
    description: Seconds between two reads of the cluster.
    type: float
    default: 1.0
notes:
  - Reads Deployments, StatefulSets, DaemonSets, ReplicaSets, Pods and Warning Events of the namespace.
  - Supports check mode (one read, no wait). Never changes anything, so RV(changed) is always false.
seealso:
  - module: kubernetes.core.k8s
  - module: kubernetes.core.helm
"""

EXAMPLES = r"""
- name: Wait for the todo release to roll out, failing fast with the reason
  todo.cloud.rollout_wait:
    namespace: todo-staging
    release: todo
    timeout: 600
    readiness_window: 60
  register: rollout

- name: Wait for two Deployments by name with an explicit kubeconfig
  todo.cloud.rollout_wait:
    kubeconfig: ~/.kube/staging
    context: do-staging
    namespace: todo-staging
    name: [todo-api, todo-web]
    kinds: [Deployment]

- name: Wait for everything labelled part-of=todo, on a cluster whose autoscaler adds nodes
  todo.cloud.rollout_wait:
    namespace: todo-production
    label_selector: app.kubernetes.io/part-of=todo
    unschedulable_grace: 300
"""

RETURN = r"""
workloads:
  description: Rollout state of every selected workload at the end.
  returned: always
  type: list
  elements: dict
  sample:
    - kind: Deployment
      name: todo-api
      complete: true
      generation: 4
      observed_generation: 4
      desired: 2
      updated: 2
      ready: 2
      available: 2
      current: 2
      waiting_for: []
failures:
  description: Why rollouts cannot succeed; one entry per workload, pod and container found failing.
  returned: always
  type: list
  elements: dict
  sample:
    - kind: Deployment
      name: todo-api
      pod: todo-api-7c9d6b5f4-x2xkq
      container: api
      reason: CrashLoopBackOff
      message: "restarted 2 times; last exit: exit code 1, Error"
ready:
  description: Whether every selected workload finished rolling out.
  returned: always
  type: bool
elapsed:
  description: Seconds spent waiting.
  returned: always
  type: float
"""

import json
import time
from datetime import UTC, datetime

from ansible_collections.todo.cloud.plugins.module_utils.k8s import (
    CONNECTION_ARG_SPEC,
    AnsibleK8SModule,
    K8sError,
    api_client,
    call,
    connect,
    require_namespace,
)
from ansible_collections.todo.cloud.plugins.module_utils.rollout import (
    KINDS,
    PodClock,
    describe,
    new_pods,
    pod_failures,
    progress,
    workload_failures,
)

RELEASE_ANNOTATION = "meta.helm.sh/release-name"
PLURALS = {"Deployment": "deployments", "StatefulSet": "statefulsets", "DaemonSet": "daemonsets"}


class Reader:
    """Lists of plain dicts straight from the API server (no model objects: fast and simple)."""

    def __init__(self, k8s_client, namespace: str, label_selector: str | None):
        self.k8s_client = k8s_client
        self.api = api_client(k8s_client)
        self.namespace = namespace
        self.label_selector = label_selector

    def _list(self, path: str, what: str, query: list[tuple[str, str]]) -> list[dict]:
        def request():
            resp = self.api.call_api(
                path,
                "GET",
                query_params=query,
                auth_settings=["BearerToken"],
                response_type="object",
                _preload_content=False,
                _return_http_data_only=True,
            )
            return json.loads(resp.data).get("items", [])

        return call(self.k8s_client, f"listing {what} in {self.namespace}", request)

    def workloads(self, kind: str) -> list[dict]:
        query = [("labelSelector", self.label_selector)] if self.label_selector else []
        items = self._list(f"/apis/apps/v1/namespaces/{self.namespace}/{PLURALS[kind]}", PLURALS[kind], query)
        for item in items:
            item["kind"] = kind
        return items

    def replicasets(self) -> list[dict]:
        return self._list(f"/apis/apps/v1/namespaces/{self.namespace}/replicasets", "replicasets", [])

    def pods(self) -> list[dict]:
        return self._list(f"/api/v1/namespaces/{self.namespace}/pods", "pods", [])

    def warning_events(self) -> list[dict]:
        return self._list(
            f"/api/v1/namespaces/{self.namespace}/events", "events", [("fieldSelector", "type=Warning")]
        )


def select(reader: Reader, params: dict) -> list[dict]:
    found = []
    for kind in params["kinds"]:
        for item in reader.workloads(kind):
            annotations = item["metadata"].get("annotations") or {}
            if params["release"] and annotations.get(RELEASE_ANNOTATION) != params["release"]:
                continue
            if params["name"] and item["metadata"]["name"] not in params["name"]:
                continue
            found.append(item)
    return found


def check_selection(selected: list[dict], params: dict) -> None:
    missing = sorted(set(params["name"]) - {w["metadata"]["name"] for w in selected})
    where = f"in namespace {params['namespace']}"
    kinds = ", ".join(params["kinds"])
    if missing:
        raise K8sError(
            f"no {kinds} named {', '.join(missing)} {where}"
            + (" matching the selection" if params["release"] or params["label_selector"] else "")
        )
    if not selected:
        criteria = [f"{k}={params[k]!r}" for k in ("release", "label_selector") if params[k]]
        raise K8sError(f"no {kinds} {where}" + (f" with {' and '.join(criteria)}" if criteria else ""))


def snapshot(
    reader: Reader, keys: set[tuple[str, str]], kinds: list[str]
) -> tuple[list[dict], list[dict], list[dict]]:
    workloads = [
        w for kind in kinds for w in reader.workloads(kind) if (w["kind"], w["metadata"]["name"]) in keys
    ]
    present = {(w["kind"], w["metadata"]["name"]) for w in workloads}
    gone = sorted(keys - present)
    if gone:
        raise K8sError("deleted while waiting: " + ", ".join(f"{k}/{n}" for k, n in gone))
    needs_pods = [w for w in workloads if not progress(w)["complete"]]
    if not needs_pods:
        return workloads, [], []
    replicasets = reader.replicasets() if any(w["kind"] == "Deployment" for w in needs_pods) else []
    return workloads, replicasets, reader.pods()


def run(module, k8s_client) -> dict:
    params = module.params
    started = time.monotonic()
    since = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    reader = Reader(k8s_client, params["namespace"], params["label_selector"])
    selected = select(reader, params)
    check_selection(selected, params)
    keys = {(w["kind"], w["metadata"]["name"]) for w in selected}
    clock = PodClock(time.monotonic)
    limits = {k: params[k] for k in ("crash_loop_restarts", "readiness_window", "unschedulable_grace")}

    while True:
        workloads, replicasets, pods = snapshot(reader, keys, params["kinds"])
        reports = [progress(w) for w in workloads]
        pending = [w for w, r in zip(workloads, reports, strict=False) if not r["complete"]]
        failures = []
        if pending:
            events = reader.warning_events()
            for w in pending:
                failures += workload_failures(w, replicasets, events, since)
                failures += pod_failures(w, new_pods(w, replicasets, pods), events, clock, **limits)
        elapsed = round(time.monotonic() - started, 1)
        result = {
            "changed": False,
            "workloads": reports,
            "failures": failures,
            "ready": not pending,
            "elapsed": elapsed,
        }
        if not pending:
            names = ", ".join(f"{r['kind']}/{r['name']}" for r in reports)
            return {**result, "msg": f"rolled out in {elapsed}s: {names}"}
        if module.check_mode:
            return {**result, "msg": "check mode: reported the current state without waiting"}
        if failures and params["fail_fast"]:
            module.fail_json(msg=f"rollout cannot succeed (after {elapsed}s): {describe(failures)}", **result)
        if elapsed >= params["timeout"]:
            waiting = "; ".join(
                f"{r['kind']}/{r['name']} waits for {', '.join(r['waiting_for'])}"
                for r in reports
                if not r["complete"]
            )
            hint = f". Found: {describe(failures)}" if failures else ""
            module.fail_json(msg=f"timed out after {params['timeout']}s: {waiting}{hint}", **result)
        time.sleep(params["poll_interval"])


ARGUMENT_SPEC = dict(
    CONNECTION_ARG_SPEC,
    namespace=dict(type="str", required=True),
    name=dict(type="list", elements="str", default=[]),
    label_selector=dict(type="str"),
    release=dict(type="str"),
    kinds=dict(type="list", elements="str", choices=list(KINDS), default=list(KINDS)),
    timeout=dict(type="int", default=300),
    fail_fast=dict(type="bool", default=True),
    crash_loop_restarts=dict(type="int", default=2),
    readiness_window=dict(type="int", default=90),
    unschedulable_grace=dict(type="int", default=30),
    poll_interval=dict(type="float", default=1.0),
)


def main() -> None:
    module = AnsibleK8SModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    for option in ("timeout", "crash_loop_restarts", "readiness_window", "unschedulable_grace"):
        if module.params[option] < 0:
            module.fail_json(msg=f"{option} must be zero or more, got {module.params[option]}")
    if module.params["poll_interval"] <= 0:
        module.fail_json(msg="poll_interval must be more than zero")
    try:
        k8s_client = connect(module)
        require_namespace(k8s_client, module.params["namespace"])
        module.exit_json(**run(module, k8s_client))
    except K8sError as exc:
        module.fail_json(msg=str(exc), changed=False)


if __name__ == "__main__":
    main()
