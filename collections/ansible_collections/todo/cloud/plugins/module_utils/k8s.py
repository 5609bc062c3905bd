# Copyright: (c) 2026, Todo platform team
# Apache License 2.0
"""Kubernetes connection and reads shared by the todo.cloud modules.

Connection arguments and client creation come from kubernetes.core (bundled with the
`ansible` package), so our modules accept exactly what kubernetes.core modules accept
(kubeconfig, context, host, api_key, validate_certs, ...). What this file adds is turning
every way a connection can go wrong into one clear sentence instead of a traceback.
"""

from __future__ import annotations

import os

from ansible.module_utils.common.text.converters import to_text

try:
    from ansible_collections.kubernetes.core.plugins.module_utils.args_common import AUTH_ARG_SPEC
    from ansible_collections.kubernetes.core.plugins.module_utils.k8s.client import get_api_client
    from ansible_collections.kubernetes.core.plugins.module_utils.k8s.core import AnsibleK8SModule
except ImportError as exc:  # pragma: no cover - the bundle always ships them
    raise ImportError("todo.cloud needs the kubernetes.core collection (bundled with `ansible`)") from exc

try:
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError
except ImportError:  # pragma: no cover - AnsibleK8SModule reports the missing library
    ApiException = HTTPError = Exception


CONNECTION_ARG_SPEC = dict(AUTH_ARG_SPEC)


class K8sError(Exception):
    """A problem worth one clear sentence to the operator."""


def api_error_message(exc: Exception) -> str:
    """The server's own words for a failed call, without the response headers."""
    if isinstance(exc, ApiException):
        import json

        try:
            body = json.loads(exc.body or "{}")
            return f"{body.get('message') or exc.reason} (HTTP {exc.status})"
        except ValueError:
            return f"{exc.reason} (HTTP {exc.status})"
    return to_text(exc)


def connect(module: AnsibleK8SModule):
    """Return a kubernetes.core K8SClient, or raise K8sError that says what is wrong."""
    kubeconfig = module.params.get("kubeconfig") or os.environ.get("K8S_AUTH_KUBECONFIG")
    if isinstance(kubeconfig, str):
        path = os.path.expanduser(kubeconfig)
        # The path itself is not repeated: kubernetes.core marks `kubeconfig` no_log.
        if not os.path.exists(path):
            raise K8sError("the kubeconfig file does not exist")
        if not os.path.isfile(path) or not os.access(path, os.R_OK):
            raise K8sError("the kubeconfig file is not a readable file")
    try:
        client = get_api_client(module=module)
    except Exception as exc:
        raise K8sError(f"could not load the cluster connection: {to_text(exc)}") from exc
    return client


def api_client(k8s_client):
    """The plain kubernetes.client.ApiClient behind a kubernetes.core K8SClient."""
    return k8s_client.client.client


def server_label(k8s_client) -> str:
    return getattr(k8s_client.configuration, "host", "the API server")


def call(k8s_client, what: str, func, *args, **kwargs):
    """Run one API call; turn transport and API errors into K8sError naming `what`."""
    try:
        return func(*args, **kwargs)
    except ApiException as exc:
        raise K8sError(f"{what}: {api_error_message(exc)}") from exc
    except HTTPError as exc:
        raise K8sError(f"{what}: cannot reach {server_label(k8s_client)}: {to_text(exc)}") from exc


def require_namespace(k8s_client, namespace: str) -> None:
    from kubernetes import client as k8s

    core = k8s.CoreV1Api(api_client(k8s_client))
    try:
        core.read_namespace(namespace)
    except ApiException as exc:
        if exc.status == 404:
            raise K8sError(f"namespace {namespace} does not exist") from exc
        raise K8sError(f"reading namespace {namespace}: {api_error_message(exc)}") from exc
    except HTTPError as exc:
        raise K8sError(f"cannot reach {server_label(k8s_client)}: {to_text(exc)}") from exc
