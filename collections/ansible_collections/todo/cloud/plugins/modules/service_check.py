#!/usr/bin/python
# Copyright: (c) 2026, Todo platform team
# Apache License 2.0
"""Ansible module todo.cloud.service_check."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: service_check
short_description: Check that Services answer, through the API server's service proxy or their endpoints
version_added: 0.1.0
author:
  - Todo platform team (@todo-platform)
description:
  - The post-deploy smoke check. For each Service in O(services), with O(mode=http), sends C(GET) O(path) to
    the Service through the API server's service proxy (so it needs no route from the control node into the
    cluster) and expects HTTP 200; with O(mode=endpoints), expects the Service to have at least one ready
    endpoint (for a control plane whose pods are simulated and cannot answer HTTP).
  - Retries each Service until O(timeout) seconds have passed, then fails naming every Service that did not
    answer and what it answered last.
  - Read-only. Runs the same in check mode.
extends_documentation_fragment:
  - kubernetes.core.k8s_auth_options
options:
  namespace:
    description: Namespace of the Services.
    type: str
    required: true
  services:
    description: Names of the Services to check.
    type: list
    elements: str
    required: true
  mode:
    description: V(http) calls O(path) through the service proxy; V(endpoints) checks for ready endpoints.
    type: str
    choices: [http, endpoints]
    default: http
  port:
    description: The Service port (number or name) to call in V(http) mode.
    type: str
    default: "80"
  path:
    description: The path to call in V(http) mode.
    type: str
    default: /readyz
  timeout:
    description: Seconds to keep retrying before failing.
    type: int
    default: 60
attributes:
  check_mode:
    description: Read-only; runs the same in check mode.
    support: full
  diff_mode:
    description: Returns no diff.
    support: none
notes:
  - Needs C(get) on C(services/proxy) (V(http) mode) or C(list) on C(endpointslices.discovery.k8s.io)
    (V(endpoints) mode) in O(namespace).
"""

EXAMPLES = r"""
- name: Every Todo service is ready through its Service
  todo.cloud.service_check:
    namespace: todo-staging
    services: [todo-api, todo-notifier, todo-gateway, todo-web]
    path: /readyz
"""

RETURN = r"""
services:
  description: One entry per Service with whether it passed and what it answered last.
  returned: always
  type: list
  elements: dict
  sample:
    - name: todo-api
      ok: true
      detail: HTTP 200
msg:
  description: A summary.
  returned: always
  type: str
  sample: 4 Service(s) in todo-staging answered /readyz with HTTP 200
"""

import time

from ansible_collections.todo.cloud.plugins.module_utils.k8s import (
    CONNECTION_ARG_SPEC,
    AnsibleK8SModule,
    ApiException,
    K8sError,
    api_client,
    api_error_message,
    connect,
    require_namespace,
)

try:
    from kubernetes.client import CoreV1Api, DiscoveryV1Api
    from urllib3.exceptions import HTTPError
except ImportError:  # pragma: no cover - AnsibleK8SModule reports the missing library
    CoreV1Api = DiscoveryV1Api = None
    HTTPError = Exception


def http_probe(core, namespace: str, service: str, port: str, path: str) -> tuple[bool, str]:
    try:
        _, status, _ = core.connect_get_namespaced_service_proxy_with_path_with_http_info(
            f"{service}:{port}", namespace, path.lstrip("/"), _request_timeout=10
        )
    except ApiException as exc:
        return False, f"HTTP {exc.status}: {api_error_message(exc)}"
    except HTTPError as exc:
        return False, f"no answer: {exc}"
    return status == 200, f"HTTP {status}"


def endpoints_probe(discovery, namespace: str, service: str) -> tuple[bool, str]:
    try:
        slices = discovery.list_namespaced_endpoint_slice(
            namespace, label_selector=f"kubernetes.io/service-name={service}"
        ).items
    except ApiException as exc:
        return False, api_error_message(exc)
    ready = sum(
        1
        for item in slices
        for endpoint in item.endpoints or []
        if endpoint.conditions is None or endpoint.conditions.ready is not False
    )
    return ready > 0, f"{ready} ready endpoint(s)"


ARGUMENT_SPEC = dict(
    CONNECTION_ARG_SPEC,
    namespace=dict(type="str", required=True),
    services=dict(type="list", elements="str", required=True),
    mode=dict(type="str", choices=["http", "endpoints"], default="http"),
    port=dict(type="str", default="80"),
    path=dict(type="str", default="/readyz"),
    timeout=dict(type="int", default=60),
)


def main() -> None:
    module = AnsibleK8SModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    params = module.params
    if not params["services"]:
        module.fail_json(msg="invalid parameters: services must name at least one Service", changed=False)
    try:
        k8s_client = connect(module)
        require_namespace(k8s_client, params["namespace"])
    except K8sError as exc:
        module.fail_json(msg=str(exc), changed=False)
    raw = api_client(k8s_client)
    core, discovery = CoreV1Api(raw), DiscoveryV1Api(raw)
    namespace = params["namespace"]

    def probe(service: str) -> tuple[bool, str]:
        if params["mode"] == "http":
            return http_probe(core, namespace, service, params["port"], params["path"])
        return endpoints_probe(discovery, namespace, service)

    deadline = time.monotonic() + params["timeout"]
    last: dict[str, tuple[bool, str]] = {}
    pending = list(params["services"])
    while True:
        for service in list(pending):
            last[service] = probe(service)
            if last[service][0]:
                pending.remove(service)
        if not pending or time.monotonic() >= deadline:
            break
        time.sleep(1)
    results = [{"name": s, "ok": last[s][0], "detail": last[s][1]} for s in params["services"]]
    what = f"answered {params['path']} with HTTP 200" if params["mode"] == "http" else "have ready endpoints"
    if pending:
        failures = "; ".join(f"{s}: {last[s][1]}" for s in pending)
        module.fail_json(
            msg=f"smoke check failed after {params['timeout']}s in {namespace}: {failures}",
            services=results,
            changed=False,
        )
    module.exit_json(changed=False, services=results, msg=f"{len(results)} Service(s) in {namespace} {what}")


if __name__ == "__main__":
    main()
