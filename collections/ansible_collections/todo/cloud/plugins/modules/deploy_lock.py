#!/usr/bin/python
# Copyright: (c) 2026, Todo platform team
# Apache License 2.0
"""Ansible module todo.cloud.deploy_lock."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: deploy_lock
short_description: Hold a per-environment deploy lock in the cluster (a coordination.k8s.io Lease)
version_added: 0.1.0
author:
  - Todo platform team (@todo-platform)
description:
  - Takes, renews or releases a Lease named O(name) in O(namespace) for O(holder), so that only one
    deployment runs against an environment at a time, whoever starts it (CI, an operator's laptop).
  - With O(state=present) the Lease is taken when it does not exist, has no holder, or its holder stopped
    renewing it (a killed run, whose C(renewTime) plus C(leaseDurationSeconds) is in the past); renewed when
    O(holder) already holds it; otherwise the module waits up to O(wait_timeout) seconds for it to be
    released or to expire, then fails with a message naming the holder, since when, and the O(info) it
    recorded.
  - With O(state=absent) the Lease is released (deleted) if O(holder) holds it; a Lease held by someone
    else is left alone and reported.
  - Every write is conditional on the Lease's resourceVersion, so two runs racing for a free Lease cannot
    both win.
  - In check mode nothing is written; RV(acquired) says whether the Lease is free for O(holder) now.
extends_documentation_fragment:
  - kubernetes.core.k8s_auth_options
options:
  name:
    description: Name of the Lease.
    type: str
    default: todo-deploy
  namespace:
    description: Namespace of the Lease, normally the environment's namespace. It must exist.
    type: str
    required: true
  holder:
    description:
      - Who holds the lock, unique per run, for example C(github-run-1234-1) or C(alice@laptop-4242).
    type: str
    required: true
  state:
    description: V(present) takes or renews the lock; V(absent) releases it.
    type: str
    choices: [present, absent]
    default: present
  lease_seconds:
    description:
      - How long the Lease stays valid without renewal. A run that dies leaves the lock to expire after
        this long. Renew (run the module again with the same O(holder)) before long steps.
    type: int
    default: 1800
  wait_timeout:
    description: Seconds to wait for a Lease held by someone else; 0 fails at once.
    type: int
    default: 0
  poll_interval:
    description: Seconds between reads while waiting.
    type: float
    default: 2.0
  info:
    description:
      - Words about this run recorded on the Lease as annotations (C(todo.cloud/<key>)), shown to a run
        that has to wait, for example the version being deployed or a CI run URL. Never put secrets here.
    type: dict
    default: {}
attributes:
  check_mode:
    description: Reads only, and reports whether the Lease is free for O(holder).
    support: full
  diff_mode:
    description: Returns no diff.
    support: none
notes:
  - Needs C(get), C(create), C(update) and C(delete) on C(leases.coordination.k8s.io) in O(namespace).
  - C(changed) is true when the Lease was created, taken over, renewed or deleted.
seealso:
  - module: todo.cloud.rollout_wait
"""

EXAMPLES = r"""
- name: Take the staging deploy lock, waiting up to 10 minutes for a running deploy
  todo.cloud.deploy_lock:
    namespace: todo-staging
    holder: "github-{{ lookup('env', 'GITHUB_RUN_ID') }}-{{ lookup('env', 'GITHUB_RUN_ATTEMPT') }}"
    wait_timeout: 600
    info:
      version: "{{ todo_image_tag }}"
      started_by: "{{ lookup('env', 'GITHUB_ACTOR') | default('operator', true) }}"

- name: Release it
  todo.cloud.deploy_lock:
    namespace: todo-staging
    holder: "github-{{ lookup('env', 'GITHUB_RUN_ID') }}-{{ lookup('env', 'GITHUB_RUN_ATTEMPT') }}"
    state: absent
"""

RETURN = r"""
acquired:
  description: Whether O(holder) holds the Lease after the task (in check mode, whether it could take it now).
  returned: always
  type: bool
  sample: true
outcome:
  description: >-
    What was done: V(created), V(taken) (from a released or expired holder), V(renewed), V(released),
    V(none) (nothing to release, or check mode), V(held) (someone else holds it; only with O(state=absent)
    or in check mode).
  returned: always
  type: str
  sample: created
holder:
  description: The Lease's holder after the task, or null when released.
  returned: always
  type: str
  sample: github-1234-1
previous_holder:
  description: For V(taken), the holder whose Lease had expired or been released.
  returned: when RV(outcome) is V(taken)
  type: str
  sample: github-1200-1
waited:
  description: Seconds spent waiting for another holder.
  returned: always
  type: float
  sample: 0.0
msg:
  description: What happened, in words.
  returned: always
  type: str
  sample: deploy lock todo-deploy in todo-staging taken by github-1234-1
"""

import time
from datetime import UTC, datetime

from ansible_collections.todo.cloud.plugins.module_utils.k8s import (
    CONNECTION_ARG_SPEC,
    AnsibleK8SModule,
    ApiException,
    K8sError,
    api_client,
    call,
    connect,
    require_namespace,
)
from ansible_collections.todo.cloud.plugins.module_utils.lease import (
    CREATE,
    RENEW,
    TAKE,
    WAIT,
    LeaseView,
    decide,
    lease_body,
)

try:
    from kubernetes.client import CoordinationV1Api
except ImportError:  # pragma: no cover - AnsibleK8SModule reports the missing library
    CoordinationV1Api = None

ANNOTATION_PREFIX = "todo.cloud/"


class Conflict(Exception):
    """Someone else wrote the Lease between our read and our write: read again."""


class Leases:
    def __init__(self, k8s_client, namespace: str, name: str) -> None:
        self.k8s_client, self.namespace, self.name = k8s_client, namespace, name
        self.raw = api_client(k8s_client)
        self.api = CoordinationV1Api(self.raw)
        self.what = f"Lease {name} in namespace {namespace}"

    def read(self) -> LeaseView | None:
        def request():
            try:
                return self.api.read_namespaced_lease(self.name, self.namespace)
            except ApiException as exc:
                if exc.status == 404:
                    return None
                raise

        found = call(self.k8s_client, f"reading {self.what}", request)
        return None if found is None else LeaseView.from_object(self.raw.sanitize_for_serialization(found))

    def _write(self, verb: str, func, *args, **kwargs) -> None:
        def request():
            try:
                func(*args, **kwargs)
            except ApiException as exc:
                if exc.status in (404, 409):  # gone or changed since we read it
                    raise Conflict from exc
                raise

        call(self.k8s_client, f"{verb} {self.what}", request)

    def create(self, body: dict) -> None:
        self._write("creating", self.api.create_namespaced_lease, self.namespace, body)

    def replace(self, body: dict) -> None:
        self._write("updating", self.api.replace_namespaced_lease, self.name, self.namespace, body)

    def delete(self, current: LeaseView) -> None:
        preconditions = {"resourceVersion": current.resource_version}
        body = {"apiVersion": "v1", "kind": "DeleteOptions", "preconditions": preconditions}
        self._write("deleting", self.api.delete_namespaced_lease, self.name, self.namespace, body=body)


def acquire(module, leases: Leases) -> dict:
    params = module.params
    holder = params["holder"]
    annotations = {ANNOTATION_PREFIX + str(k): str(v) for k, v in params["info"].items()}
    started = time.monotonic()
    while True:
        now = datetime.now(UTC)
        current = leases.read()
        step = decide(current, holder, now)
        waited = round(time.monotonic() - started, 1)
        if step == WAIT:
            if module.check_mode:
                return result(False, "held", current.holder, waited, f"{leases.what} is {current.describe()}")
            if waited >= params["wait_timeout"]:
                module.fail_json(
                    msg=f"another deploy is running: {leases.what} is {current.describe()}; "
                    f"waited {waited:.0f}s (wait_timeout {params['wait_timeout']}s)",
                    acquired=False,
                    outcome="none",
                    holder=current.holder,
                    waited=waited,
                    changed=False,
                )
            time.sleep(params["poll_interval"])
            continue
        if module.check_mode:
            return result(True, "none", holder, waited, f"{leases.what} is free for {holder} (check mode)")
        body = lease_body(
            leases.name, holder, params["lease_seconds"], now, current=current, annotations=annotations
        )
        try:
            leases.create(body) if step == CREATE else leases.replace(body)
        except Conflict:
            continue  # lost a race; look again
        outcome = {CREATE: "created", TAKE: "taken", RENEW: "renewed"}[step]
        out = result(True, outcome, holder, waited, f"{leases.what} {outcome} by {holder}", changed=True)
        if step == TAKE and current.holder:
            out["previous_holder"] = current.holder
            out["msg"] += f" (the lease of {current.holder} had expired)"
        return out


def release(module, leases: Leases) -> dict:
    holder = module.params["holder"]
    while True:
        current = leases.read()
        if current is None or current.holder is None:
            return result(False, "none", None, 0.0, f"{leases.what} is not held; nothing to release")
        if current.holder != holder:
            msg = f"{leases.what} is {current.describe()}, not by {holder}; left alone"
            return result(False, "held", current.holder, 0.0, msg)
        if module.check_mode:
            return result(True, "none", holder, 0.0, f"{leases.what} would be released (check mode)")
        try:
            leases.delete(current)
        except Conflict:
            continue
        return result(False, "released", None, 0.0, f"{leases.what} released by {holder}", changed=True)


def result(acquired: bool, outcome: str, holder, waited: float, msg: str, changed: bool = False) -> dict:
    return {
        "acquired": acquired,
        "outcome": outcome,
        "holder": holder,
        "waited": waited,
        "msg": msg,
        "changed": changed,
    }


ARGUMENT_SPEC = dict(
    CONNECTION_ARG_SPEC,
    name=dict(type="str", default="todo-deploy"),
    namespace=dict(type="str", required=True),
    holder=dict(type="str", required=True),
    state=dict(type="str", choices=["present", "absent"], default="present"),
    lease_seconds=dict(type="int", default=1800),
    wait_timeout=dict(type="int", default=0),
    poll_interval=dict(type="float", default=2.0),
    info=dict(type="dict", default={}),
)


def main() -> None:
    module = AnsibleK8SModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    params = module.params
    problems = []
    if not params["holder"].strip():
        problems.append("holder must not be empty")
    if params["lease_seconds"] < 10:
        problems.append("lease_seconds must be at least 10")
    if params["wait_timeout"] < 0:
        problems.append("wait_timeout must not be negative")
    if params["poll_interval"] <= 0:
        problems.append("poll_interval must be positive")
    if problems:
        module.fail_json(msg="invalid parameters: " + "; ".join(problems), changed=False)
    try:
        k8s_client = connect(module)
        require_namespace(k8s_client, params["namespace"])
        leases = Leases(k8s_client, params["namespace"], params["name"])
        module.exit_json(
            **(acquire(module, leases) if params["state"] == "present" else release(module, leases))
        )
    except K8sError as exc:
        module.fail_json(msg=str(exc), changed=False)


if __name__ == "__main__":
    main()
