#!/usr/bin/python
# Copyright: (c) 2026, Todo platform team
# Apache License 2.0
"""Ansible module todo.cloud.secret_assert."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: secret_assert
short_description: Assert that Secrets exist, hold real values and share none with another namespace
version_added: 0.1.0
author:
  - Todo platform team (@todo-platform)
description:
  - Reads the listed Secrets of O(namespace) and checks that each exists and has the listed keys, and that
    every listed value is non-empty, is not a known placeholder and, when asked, has a format (a URL with
    scheme and host, a PEM block) or a minimum length.
  - With O(distinct_from), also checks that no value of the listed Secrets (every key, listed or not) is
    the value of any Secret in those namespaces. Values are compared by SHA-256 digest in memory.
  - Reports every problem found in one run, not only the first, in RV(problems) and in one readable
    failure message.
  - Never reveals a value, a part of one, its length or its digest; problems name the Secret and the key
    only. Values are held in memory only while being checked.
  - Read-only. Runs the same in check mode.
extends_documentation_fragment:
  - kubernetes.core.k8s_auth_options
options:
  namespace:
    description: Namespace whose Secrets are asserted. It must exist.
    type: str
    required: true
  secrets:
    description:
      - The Secrets that must exist in O(namespace), each with the keys it must hold.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description: Name of the Secret.
        type: str
        required: true
      keys:
        description:
          - Keys the Secret must hold. Each is a key name, or a mapping with C(name) (required), C(format)
            and C(min_length).
          - C(format) is one of V(any) (the default), V(url) (needs a scheme and a host; the URL's password
            is checked for placeholders too) or V(pem) (BEGIN/END blocks with matching labels around valid
            base64).
          - C(min_length) is the least number of characters the value must have (bytes for a value that
            is not UTF-8 text), for example 32 for a signing key.
          - With no keys, only the Secret's existence is asserted.
        type: list
        elements: raw
        default: []
  placeholders:
    description:
      - More values to refuse as placeholders, compared with the whole trimmed value, ignoring case. They add
        to the built-in list (changeme, changethis, password, secret, todo, example, test, dummy, default,
        admin, xxx..., replace-me, placeholder, C(<...>), C(${...}) and similar).
      - Values containing C(changeme), C(changethis), C(replaceme), C(replace-me), C(placeholder), C(xxxx),
        an unexpanded C(${VARIABLE}) or an unrendered C({{ template }}) anywhere are always placeholders.
    type: list
    elements: str
    default: []
  allow_placeholders:
    description:
      - Accept placeholder values. Meant for the local inventory only; never set it for staging or
        production. Missing Secrets and keys, empty values, formats and lengths are still checked.
    type: bool
    default: false
  distinct_from:
    description:
      - Namespaces that must share no value with the listed Secrets, for example the production namespace
        when asserting staging. Every Secret there is compared except Helm release records
        (C(helm.sh/release.v1)) and service-account tokens.
      - A namespace that does not exist shares nothing; RV(compared_namespaces) says it was not found.
      - Needs permission to list Secrets in those namespaces; a refusal fails the task.
    type: list
    elements: str
    default: []
attributes:
  check_mode:
    description: Read-only; runs and reports the same in check mode.
    support: full
  diff_mode:
    description: Returns no diff; values are never shown.
    support: none
notes:
  - Reads the listed Secrets with C(get), the namespaces with C(get) and, for O(distinct_from), lists Secrets.
  - Never changes anything, so C(changed) is always false.
seealso:
  - module: kubernetes.core.k8s_info
"""

EXAMPLES = r"""
- name: Assert the staging Secrets are complete, real and not shared with production
  todo.cloud.secret_assert:
    namespace: todo-staging
    secrets:
      - name: todo-db
        keys:
          - name: DATABASE_URL
            format: url
          - password
      - name: todo-auth
        keys:
          - name: JWT_SIGNING_KEY
            min_length: 32
      - name: todo-ingress-tls
        keys:
          - name: tls.crt
            format: pem
          - name: tls.key
            format: pem
    distinct_from:
      - todo-production

- name: Assert the local Secrets exist, accepting the local placeholders
  todo.cloud.secret_assert:
    kubeconfig: ~/.kube/todo-local
    namespace: todo
    secrets:
      - name: todo-db
        keys: [DATABASE_URL, password]
    allow_placeholders: true

- name: Refuse this project's own sample values too
  todo.cloud.secret_assert:
    namespace: todo-production
    secrets:
      - name: todo-kafka
        keys: [sasl-username, sasl-password]
    placeholders:
      - todo-dev-password
      - redpanda
  register: secret_check
"""

RETURN = r"""
problems:
  description:
    - Every problem found. C(problem) is one of V(missing_secret), V(missing_key), V(empty),
      V(placeholder), V(invalid_url), V(invalid_pem), V(too_short), V(shared) or V(unreadable).
    - C(key) is null for V(missing_secret). V(shared) problems also have C(shared_with), the
      C(namespace/secret/key) entries holding the same value.
  returned: when the Secrets could be read
  type: list
  elements: dict
  contains:
    secret:
      description: Name of the Secret.
      type: str
    key:
      description: The key, or null when the whole Secret is missing.
      type: str
    problem:
      description: What kind of problem it is.
      type: str
    message:
      description: The problem in words; names the Secret and key, never the value.
      type: str
    shared_with:
      description: For V(shared) problems, the C(namespace/secret/key) entries holding the same value.
      type: list
      elements: str
      returned: for shared problems
  sample:
    - secret: todo-db
      key: DATABASE_URL
      problem: placeholder
      message: todo-db/DATABASE_URL has a placeholder as the URL's password
    - secret: todo-auth
      key: JWT_SIGNING_KEY
      problem: shared
      message: todo-auth/JWT_SIGNING_KEY has the same value as todo-production/todo-auth/JWT_SIGNING_KEY
      shared_with:
        - todo-production/todo-auth/JWT_SIGNING_KEY
checked:
  description: The Secrets and keys checked, as listed in O(secrets), and whether each Secret exists.
  returned: when the Secrets could be read
  type: list
  elements: dict
  sample:
    - name: todo-db
      found: true
      keys: [DATABASE_URL, password]
compared_namespaces:
  description:
    - One entry per O(distinct_from) namespace, saying whether it exists and how many of its Secrets were
      compared. A namespace that does not exist shares nothing.
  returned: when the Secrets could be read
  type: list
  elements: dict
  sample:
    - name: todo-production
      found: true
      secrets_compared: 4
msg:
  description: A summary on success; on failure, every problem in one readable message.
  returned: always
  type: str
  sample: "4 Secret(s) and 9 key(s) in todo-staging passed; no value is shared with todo-production"
"""

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
from ansible_collections.todo.cloud.plugins.module_utils.secret_rules import (
    SecretRule,
    SpecError,
    decode_data,
    evaluate,
    parse_rules,
    placeholder_words,
    shared_values,
    summary,
)

try:
    from kubernetes.client import CoreV1Api
except ImportError:  # pragma: no cover - AnsibleK8SModule reports the missing library
    CoreV1Api = None

# Secrets that hold no application value: Helm's release records and service-account tokens.
SKIPPED_TYPES = ("helm.sh/release.v1", "kubernetes.io/service-account-token")
PAGE_SIZE = 100


def read_secret(k8s_client, core, namespace: str, name: str) -> dict[str, bytes] | None:
    """The decoded data of one Secret, or None when it does not exist."""

    def request():
        try:
            return core.read_namespaced_secret(name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    secret = call(k8s_client, f"reading Secret {name} in namespace {namespace}", request)
    return None if secret is None else decode_data(secret.data)


def namespace_exists(k8s_client, core, namespace: str) -> bool:
    def request():
        try:
            core.read_namespace(namespace)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    return call(k8s_client, f"reading namespace {namespace}", request)


def list_secrets(k8s_client, core, namespace: str) -> dict[str, dict[str, bytes]]:
    """Decoded data of every Secret in `namespace` that can hold an application value."""
    selector = ",".join(f"type!={t}" for t in SKIPPED_TYPES)
    found: dict[str, dict[str, bytes]] = {}
    token = None
    while True:
        kwargs = {"field_selector": selector, "limit": PAGE_SIZE}
        if token:
            kwargs["_continue"] = token
        page = call(
            k8s_client,
            f"listing Secrets in namespace {namespace}",
            core.list_namespaced_secret,
            namespace,
            **kwargs,
        )
        for item in page.items:
            if item.type not in SKIPPED_TYPES:
                found[item.metadata.name] = decode_data(item.data)
        token = page.metadata._continue
        if not token:
            return found


def run(module, k8s_client, rules: list[SecretRule]) -> dict:
    params = module.params
    namespace = params["namespace"]
    core = CoreV1Api(api_client(k8s_client))
    require_namespace(k8s_client, namespace)

    own = {rule.name: read_secret(k8s_client, core, namespace, rule.name) for rule in rules}
    problems = evaluate(
        rules, own, namespace, placeholder_words(params["placeholders"]), params["allow_placeholders"]
    )
    checked = [
        {"name": r.name, "found": own[r.name] is not None, "keys": [k.name for k in r.keys]} for r in rules
    ]

    others: dict[str, dict[str, dict[str, bytes]]] = {}
    compared = []
    for other in params["distinct_from"]:
        if namespace_exists(k8s_client, core, other):
            others[other] = list_secrets(k8s_client, core, other)
            compared.append({"name": other, "found": True, "secrets_compared": len(others[other])})
        else:
            compared.append({"name": other, "found": False, "secrets_compared": 0})
    if others:
        problems += shared_values(own, others)
    # Drop the values as soon as they are no longer needed.
    own.clear()
    others.clear()

    # In the order the Secrets and keys were listed; keys not listed (shared ones) last.
    order = {(r.name, k.name): (i, j) for i, r in enumerate(rules) for j, k in enumerate(r.keys)}
    secret_order = {r.name: i for i, r in enumerate(rules)}
    problems.sort(key=lambda p: order.get((p.secret, p.key), (secret_order[p.secret], len(order))))
    result = {
        "changed": False,
        "problems": [p.as_dict() for p in problems],
        "checked": checked,
        "compared_namespaces": compared,
    }
    if problems:
        module.fail_json(msg=summary(problems, namespace), **result)
    keys = sum(len(r.keys) for r in rules)
    msg = f"{len(rules)} Secret(s) and {keys} key(s) in {namespace} passed"
    if compared:
        parts = [c["name"] if c["found"] else f"{c['name']} (namespace not found)" for c in compared]
        msg += f"; no value is shared with {', '.join(parts)}"
    return {**result, "msg": msg}


ARGUMENT_SPEC = dict(
    CONNECTION_ARG_SPEC,
    namespace=dict(type="str", required=True),
    secrets=dict(
        type="list",
        elements="dict",
        required=True,
        no_log=False,  # names of Secrets and keys, never values
        options=dict(
            name=dict(type="str", required=True),
            keys=dict(type="list", elements="raw", default=[], no_log=False),
        ),
    ),
    placeholders=dict(type="list", elements="str", default=[]),
    allow_placeholders=dict(type="bool", default=False),
    distinct_from=dict(type="list", elements="str", default=[]),
)


def main() -> None:
    module = AnsibleK8SModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    params = module.params
    try:
        rules = parse_rules(params["secrets"], params["namespace"], params["distinct_from"])
    except SpecError as exc:
        module.fail_json(msg=f"invalid parameters: {exc}", changed=False)
    try:
        k8s_client = connect(module)
        module.exit_json(**run(module, k8s_client, rules))
    except K8sError as exc:
        module.fail_json(msg=str(exc), changed=False)


if __name__ == "__main__":
    main()
