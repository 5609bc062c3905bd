"""Integration tests of todo.cloud.secret_assert: real ansible-playbook runs against a real
kube-apiserver (rung L1: the module only reads Secrets and Namespaces, no controller is needed)."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import secrets as pysecrets
import uuid
from urllib.parse import quote

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from testkit import machine
from testkit.ansible import run_cases, run_playbook

pytestmark = pytest.mark.integration

TASK = "Assert secrets"


# -- helpers ------------------------------------------------------------------------------------


def self_signed() -> tuple[str, str]:
    """A real certificate and key, PEM encoded."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "todo.test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem.decode()


def good_values() -> dict[str, dict[str, str]]:
    cert, key = self_signed()
    return {
        "todo-db": {
            "DATABASE_URL": f"postgresql://todo_app:{pysecrets.token_urlsafe(24)}@db.todo.svc:5432/todo",
            "password": pysecrets.token_urlsafe(24),
        },
        "todo-auth": {"JWT_SIGNING_KEY": pysecrets.token_hex(32)},
        "todo-tls": {"tls.crt": cert, "tls.key": key},
    }


SPEC = [
    {"name": "todo-db", "keys": [{"name": "DATABASE_URL", "format": "url"}, "password"]},
    {"name": "todo-auth", "keys": [{"name": "JWT_SIGNING_KEY", "min_length": 32}]},
    {
        "name": "todo-tls",
        "keys": [{"name": "tls.crt", "format": "pem"}, {"name": "tls.key", "format": "pem"}],
    },
]


def put_secrets(k8s, namespace: str, values: dict[str, dict[str, str | bytes]], type_: str = "Opaque"):
    for name, data in values.items():
        encoded = {
            k: base64.b64encode(v if isinstance(v, bytes) else v.encode()).decode() for k, v in data.items()
        }
        k8s.core.create_namespaced_secret(
            namespace, {"metadata": {"name": name}, "type": type_, "data": encoded}
        )


def assert_task(kube_auth, namespace, secrets=None, **options) -> dict:
    args = {**kube_auth, "namespace": namespace, "secrets": SPEC if secrets is None else secrets, **options}
    return {"name": TASK, "todo.cloud.secret_assert": args}


def kinds(result) -> list[tuple[str, str | None, str]]:
    return [(p["secret"], p["key"], p["problem"]) for p in result["problems"]]


@pytest.fixture
def other_namespace(k8s):
    """A second fresh namespace (the "production" side of a sharing check)."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    k8s.core.create_namespace({"metadata": {"name": name}})
    yield name
    k8s.core.delete_namespace(name)


# -- passing ------------------------------------------------------------------------------------


def test_complete_real_secrets_pass(tmp_path, k8s, namespace, other_namespace, kube_auth):
    values = good_values()
    put_secrets(k8s, namespace, values)
    put_secrets(k8s, other_namespace, good_values())
    # Excluded from the sharing check: a Helm release record holding a copy of a value.
    put_secrets(
        k8s,
        other_namespace,
        {"sh.helm.release.v1.todo.v1": {"release": values["todo-auth"]["JWT_SIGNING_KEY"]}},
        type_="helm.sh/release.v1",
    )
    missing = f"t-absent-{uuid.uuid4().hex[:6]}"
    run = run_playbook(
        tmp_path, [assert_task(kube_auth, namespace, distinct_from=[other_namespace, missing])]
    )
    result = run.task(TASK)
    assert run.rc == 0, run.output
    assert result["changed"] is False
    assert result["problems"] == []
    assert result["checked"] == [
        {"name": "todo-db", "found": True, "keys": ["DATABASE_URL", "password"]},
        {"name": "todo-auth", "found": True, "keys": ["JWT_SIGNING_KEY"]},
        {"name": "todo-tls", "found": True, "keys": ["tls.crt", "tls.key"]},
    ]
    assert result["compared_namespaces"] == [
        {"name": other_namespace, "found": True, "secrets_compared": 3},
        {"name": missing, "found": False, "secrets_compared": 0},
    ]
    assert f"{missing} (namespace not found)" in result["msg"]


def test_existence_only_and_local_placeholders(tmp_path, k8s, namespace, kube_auth):
    put_secrets(k8s, namespace, {"todo-db": {"password": "changeme"}, "todo-registry": {"x": "y"}})
    spec = [{"name": "todo-db", "keys": ["password"]}, {"name": "todo-registry"}]
    run = run_playbook(tmp_path, [assert_task(kube_auth, namespace, spec, allow_placeholders=True)])
    assert run.rc == 0, run.output
    assert run.task(TASK)["problems"] == []


# -- each failure mode --------------------------------------------------------------------------

FAILURES = {
    "missing_secret": ({}, [{"name": "todo-db", "keys": ["password"]}], ("todo-db", None, "missing_secret")),
    "missing_key": (
        {"todo-db": {"user": "todo_app"}},
        [{"name": "todo-db", "keys": ["password"]}],
        ("todo-db", "password", "missing_key"),
    ),
    "empty": (
        {"todo-db": {"password": ""}},
        [{"name": "todo-db", "keys": ["password"]}],
        ("todo-db", "password", "empty"),
    ),
    "placeholder": (
        {"todo-db": {"password": "ChangeMe"}},
        [{"name": "todo-db", "keys": ["password"]}],
        ("todo-db", "password", "placeholder"),
    ),
    "placeholder_url_password": (
        {"todo-db": {"DATABASE_URL": "postgresql://todo:password@db/todo"}},
        [{"name": "todo-db", "keys": [{"name": "DATABASE_URL", "format": "url"}]}],
        ("todo-db", "DATABASE_URL", "placeholder"),
    ),
    "bad_url": (
        {"todo-db": {"DATABASE_URL": "db.todo.svc:5432/todo"}},
        [{"name": "todo-db", "keys": [{"name": "DATABASE_URL", "format": "url"}]}],
        ("todo-db", "DATABASE_URL", "invalid_url"),
    ),
    "bad_pem": (
        {"todo-tls": {"tls.crt": "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n"}},
        [{"name": "todo-tls", "keys": [{"name": "tls.crt", "format": "pem"}]}],
        ("todo-tls", "tls.crt", "invalid_pem"),
    ),
    "short_key": (
        {"todo-auth": {"JWT_SIGNING_KEY": pysecrets.token_hex(8)}},
        [{"name": "todo-auth", "keys": [{"name": "JWT_SIGNING_KEY", "min_length": 32}]}],
        ("todo-auth", "JWT_SIGNING_KEY", "too_short"),
    ),
}


@pytest.fixture(scope="module")
def failure_runs(tmp_path_factory, k8s, kube_auth):
    """Every failure mode planted in its own namespace, asserted by one playbook (run_cases)."""
    namespaces = {case: f"t-{uuid.uuid4().hex[:8]}" for case in FAILURES}
    tasks = {}
    for case, (planted, spec, _) in FAILURES.items():
        k8s.core.create_namespace({"metadata": {"name": namespaces[case]}})
        put_secrets(k8s, namespaces[case], planted)
        tasks[case] = assert_task(kube_auth, namespaces[case], spec)
    with machine.shared():
        run = run_cases(tmp_path_factory.mktemp("failures"), tasks)
    yield run, namespaces
    for name in namespaces.values():
        k8s.core.delete_namespace(name)


@pytest.mark.parametrize("case", list(FAILURES))
def test_each_failure_mode(case, failure_runs):
    run, namespaces = failure_runs
    msg = run.failure(case)
    assert msg.startswith(f"1 problem with the Secrets in namespace {namespaces[case]}:")
    assert run.task(case)["changed"] is False
    assert kinds(run.task(case)) == [FAILURES[case][2]]


def test_shared_with_another_namespace(tmp_path, k8s, namespace, other_namespace, kube_auth):
    values = good_values()
    put_secrets(k8s, namespace, values)
    # Production got a copy of the staging signing key under another name, plus its own values.
    put_secrets(k8s, other_namespace, good_values())
    put_secrets(k8s, other_namespace, {"copied": {"key": values["todo-auth"]["JWT_SIGNING_KEY"]}})
    run = run_playbook(tmp_path, [assert_task(kube_auth, namespace, distinct_from=[other_namespace])])
    result = run.task(TASK)
    assert run.rc != 0
    assert result["problems"] == [
        {
            "secret": "todo-auth",
            "key": "JWT_SIGNING_KEY",
            "problem": "shared",
            "message": f"todo-auth/JWT_SIGNING_KEY has the same value as {other_namespace}/copied/key",
            "shared_with": [f"{other_namespace}/copied/key"],
        }
    ]
    assert result["compared_namespaces"] == [{"name": other_namespace, "found": True, "secrets_compared": 4}]


def test_every_problem_is_reported_at_once(tmp_path, k8s, namespace, other_namespace, kube_auth):
    shared = pysecrets.token_urlsafe(32)
    put_secrets(
        k8s,
        namespace,
        {
            "todo-db": {"DATABASE_URL": "postgresql://todo:changeme@db/todo", "password": ""},
            "todo-auth": {"JWT_SIGNING_KEY": "too-short", "OTHER": shared},
            "todo-tls": {"tls.crt": "not pem"},
        },
    )
    put_secrets(k8s, other_namespace, {"prod-auth": {"OTHER": shared}})
    run = run_playbook(tmp_path, [assert_task(kube_auth, namespace, distinct_from=[other_namespace])])
    result = run.task(TASK)
    assert run.rc != 0
    assert sorted(kinds(result)) == sorted(
        [
            ("todo-auth", "JWT_SIGNING_KEY", "too_short"),
            ("todo-auth", "OTHER", "shared"),
            ("todo-db", "DATABASE_URL", "placeholder"),
            ("todo-db", "password", "empty"),
            ("todo-tls", "tls.crt", "invalid_pem"),
            ("todo-tls", "tls.key", "missing_key"),
        ]
    )
    msg = result["msg"]
    assert msg.startswith(f"6 problems with the Secrets in namespace {namespace}:")
    for problem in result["problems"]:
        assert problem["message"] in msg


# -- check mode ---------------------------------------------------------------------------------


def test_check_mode_behaves_the_same(tmp_path, k8s, namespace, kube_auth):
    put_secrets(k8s, namespace, good_values())
    passing = run_playbook(tmp_path, [assert_task(kube_auth, namespace)], extra_args=("--check",))
    assert passing.rc == 0, passing.output
    assert passing.task(TASK)["problems"] == [] and passing.task(TASK)["changed"] is False
    spec = [*SPEC, {"name": "todo-absent", "keys": ["x"]}]
    normal = run_playbook(tmp_path, [assert_task(kube_auth, namespace, spec)])
    checked = run_playbook(tmp_path, [assert_task(kube_auth, namespace, spec)], extra_args=("--check",))
    assert normal.rc != 0 and checked.rc != 0
    for key in ("problems", "checked", "msg", "changed"):
        assert checked.task(TASK)[key] == normal.task(TASK)[key]
    assert kinds(checked.task(TASK)) == [("todo-absent", None, "missing_secret")]


# -- bad input: clear failures, never a traceback -----------------------------------------------

BAD_PARAMETERS = {
    "unknown-option": ({"bogus": 1}, "Unsupported parameters for (todo.cloud.secret_assert) module: bogus"),
    "no-namespace": ({"namespace": None}, "missing required arguments: namespace"),
    "bad-format": (
        {"secrets": [{"name": "todo-db", "keys": [{"name": "DATABASE_URL", "format": "uri"}]}]},
        "invalid parameters: secrets[todo-db].keys[0] (DATABASE_URL): format must be one of any, url",
    ),
    "bad-min-length": (
        {"secrets": [{"name": "todo-db", "keys": [{"name": "k", "min_length": "long"}, {"nam": "x"}]}]},
        "min_length must be a whole number of at least 1, got 'long'",
    ),
    "unnamed-secret": ({"secrets": [{"keys": ["a"]}]}, "missing required arguments: name found in secrets"),
    "no-secrets": ({"secrets": []}, "secrets must list at least one Secret"),
    "bad-distinct-from": ({"distinct_from": ["SAME"]}, "distinct_from: 'SAME' is not a valid namespace name"),
}
UNREADABLE_KUBECONFIGS = {
    "not-yaml": "{{{ this is not YAML",
    "a-string": "just a string\n",
    "no-clusters": "apiVersion: v1\nkind: Config\n",
}


@pytest.fixture(scope="module")
def bad_input_runs(tmp_path_factory, k8s, controlplane, kube_auth):
    """Every bad input below as a task of one playbook (run_cases): the module must fail each one
    clearly, before it reads or changes anything."""
    folder = tmp_path_factory.mktemp("bad-input")
    namespace = f"t-{uuid.uuid4().hex[:8]}"
    k8s.core.create_namespace({"metadata": {"name": namespace}})
    tasks = {}
    for case, (options, _) in BAD_PARAMETERS.items():
        args = {**kube_auth, "namespace": "todo-staging", "secrets": SPEC, **options}
        tasks[case] = {"todo.cloud.secret_assert": {k: v for k, v in args.items() if v is not None}}
    tasks["distinct-from-itself"] = assert_task(kube_auth, namespace, distinct_from=[namespace])
    tasks["missing-kubeconfig"] = assert_task(
        {**kube_auth, "kubeconfig": str(folder / "nowhere" / "kubeconfig")}, "todo-staging"
    )
    for case, content in UNREADABLE_KUBECONFIGS.items():
        (folder / case).write_text(content)
        tasks[case] = assert_task({**kube_auth, "kubeconfig": str(folder / case)}, "todo-staging")
    tasks["kubeconfig-is-a-directory"] = assert_task({**kube_auth, "kubeconfig": str(folder)}, "todo-staging")
    tasks["unknown-context"] = assert_task({**kube_auth, "context": "no-such-context"}, "todo-staging")
    tasks["missing-namespace"] = assert_task(kube_auth, "t-does-not-exist")
    broken = folder / "unreachable"
    broken.write_text(
        controlplane.kubeconfig_path.read_text().replace(controlplane.server, "https://127.0.0.1:1")
    )
    tasks["unreachable-api-server"] = assert_task({**kube_auth, "kubeconfig": str(broken)}, "todo-staging")
    with machine.shared():
        run = run_cases(folder, tasks)
    yield run, namespace
    k8s.core.delete_namespace(namespace)


@pytest.mark.parametrize("case", list(BAD_PARAMETERS))
def test_bad_parameters_fail_clearly(case, bad_input_runs):
    assert BAD_PARAMETERS[case][1] in bad_input_runs[0].failure(case)


def test_distinct_from_must_not_be_the_namespace_itself(bad_input_runs):
    _, namespace = bad_input_runs
    msg = bad_input_runs[0].failure("distinct-from-itself")
    assert f"must not name the asserted namespace {namespace} itself" in msg


def test_missing_kubeconfig(bad_input_runs):
    assert bad_input_runs[0].failure("missing-kubeconfig") == "the kubeconfig file does not exist"


@pytest.mark.parametrize("case", list(UNREADABLE_KUBECONFIGS))
def test_unreadable_kubeconfig(case, bad_input_runs):
    assert bad_input_runs[0].failure(case).startswith("could not load the cluster connection")


def test_kubeconfig_is_a_directory(bad_input_runs):
    msg = bad_input_runs[0].failure("kubeconfig-is-a-directory")
    assert msg == "the kubeconfig file is not a readable file"


def test_unknown_context(bad_input_runs):
    msg = bad_input_runs[0].failure("unknown-context")
    assert msg.startswith("could not load the cluster connection") and "no-such-context" in msg


def test_missing_namespace(bad_input_runs):
    assert bad_input_runs[0].failure("missing-namespace") == "namespace t-does-not-exist does not exist"


def test_unreachable_api_server(bad_input_runs):
    msg = bad_input_runs[0].failure("unreachable-api-server")
    assert "127.0.0.1" in msg and "port=1" in msg and "Connection refused" in msg


def test_forbidden_to_list_the_other_namespace(tmp_path, k8s, namespace, other_namespace, kube_auth):
    """A user who may read the asserted Secrets but not list production's gets a clear failure."""
    from kubernetes import client

    rbac = client.RbacAuthorizationV1Api(k8s.api_client)
    user = f"deployer-{uuid.uuid4().hex[:6]}"
    rbac.create_cluster_role(
        {
            "metadata": {"name": user},
            "rules": [{"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get"]}],
        }
    )
    rbac.create_cluster_role_binding(
        {
            "metadata": {"name": user},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": user},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
        }
    )
    rbac.create_namespaced_role(
        namespace,
        {
            "metadata": {"name": user},
            "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}],
        },
    )
    rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": user},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": user},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
        },
    )
    try:
        put_secrets(k8s, namespace, good_values())
        auth = {**kube_auth, "impersonate_user": user}
        allowed = run_playbook(tmp_path, [assert_task(auth, namespace)])
        assert allowed.rc == 0, allowed.output
        run = run_playbook(tmp_path, [assert_task(auth, namespace, distinct_from=[other_namespace])])
        assert run.rc != 0
        msg = run.failure(TASK)
        assert msg.startswith(f"listing Secrets in namespace {other_namespace}: ")
        assert "forbidden" in msg and "(HTTP 403)" in msg
    finally:
        rbac.delete_cluster_role_binding(user)
        rbac.delete_cluster_role(user)


# -- no value ever leaks ------------------------------------------------------------------------


def leak_forms(value: str) -> set[str]:
    """The value, and the ways it could show up disguised: base64 (alone or inside a larger
    base64 blob, at each of the three alignments), URL-encoded, and its SHA-256 digest."""
    raw = value.encode()
    forms = {value, quote(value, safe=""), hashlib.sha256(raw).hexdigest()}
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + raw).decode()
        forms.add(encoded)
        forms.add(encoded[4:-4])  # the stable middle, whatever surrounds the value
    forms.add(base64.urlsafe_b64encode(raw).decode().rstrip("="))
    return {f for f in forms if len(f) >= 8}


def test_no_value_ever_appears_in_any_output(tmp_path, k8s, namespace, other_namespace, kube_auth):
    marks: list[str] = []

    def mark() -> str:
        """A distinctive token, never a placeholder; every one is grepped for on its own too."""
        marks.append("Lk" + pysecrets.token_hex(10))
        return marks[-1]

    cert, key = self_signed()
    shared = mark() + mark()
    passing = {
        "todo-db": {
            "DATABASE_URL": f"postgresql://todo_app:{mark()}@db.todo.svc:5432/todo",
            "password": mark(),
        },
        "todo-auth": {"JWT_SIGNING_KEY": mark() + mark()},
        "todo-tls": {"tls.crt": cert, "tls.key": key},
    }
    failing = {
        "todo-db": {
            "DATABASE_URL": f"postgresql://todo:{mark()}-changeme@db/todo",  # placeholder marker
            "password": mark(),
        },
        "todo-auth": {"JWT_SIGNING_KEY": mark(), "SHARED": shared},  # too short; shared
        "todo-tls": {
            "tls.crt": f"-----BEGIN CERTIFICATE-----\n{mark()}!\n-----END CERTIFICATE-----\n",
            "tls.key": f"{mark()}:{mark()}",
        },  # not PEM
    }
    url_fail = f"{mark()}.example/{mark()}"  # not a URL
    failing["todo-db"]["password"] = url_fail
    spec_fail = [
        {
            "name": "todo-db",
            "keys": [{"name": "DATABASE_URL", "format": "url"}, {"name": "password", "format": "url"}],
        },
        {"name": "todo-auth", "keys": [{"name": "JWT_SIGNING_KEY", "min_length": 64}]},
        {
            "name": "todo-tls",
            "keys": [{"name": "tls.crt", "format": "pem"}, {"name": "tls.key", "format": "pem"}],
        },
    ]
    good_ns, bad_ns = namespace, other_namespace
    put_secrets(k8s, good_ns, passing)
    put_secrets(k8s, bad_ns, failing)
    # The "production" side holds the shared value: the failing run compares against the passing one.
    put_secrets(k8s, good_ns, {"prod-copy": {"k": shared}})

    runs = []
    for callback in ("ansible.posix.json", "default"):
        env = {"ANSIBLE_STDOUT_CALLBACK": callback}
        for extra in ((), ("--check", "--diff")):
            # The passing call, then the failing one (its error ignored), in one run.
            run = run_playbook(
                tmp_path,
                [
                    assert_task(kube_auth, good_ns),
                    {
                        **assert_task(kube_auth, bad_ns, spec_fail, distinct_from=[good_ns]),
                        "ignore_errors": True,
                    },
                ],
                extra_args=extra,
                env=env,
                verbosity=3,
            )
            assert run.rc == 0, run.output[-3000:]
            if callback == "ansible.posix.json":
                assert run.stats["ignored"] == 1 and run.stats["failures"] == 0
            else:
                assert "ok=2" in run.output and "ignored=1" in run.output
            runs.append(run)

    # The failing run did find every planted problem ...
    bad = run_playbook(tmp_path, [assert_task(kube_auth, bad_ns, spec_fail, distinct_from=[good_ns])])
    assert sorted(kinds(bad.task(TASK))) == sorted(
        [
            ("todo-auth", "JWT_SIGNING_KEY", "too_short"),
            ("todo-auth", "SHARED", "shared"),
            ("todo-db", "DATABASE_URL", "placeholder"),
            ("todo-db", "password", "invalid_url"),
            ("todo-tls", "tls.crt", "invalid_pem"),
            ("todo-tls", "tls.key", "invalid_pem"),
        ]
    )
    runs.append(bad)

    # ... and no run shows any value, in any form.
    planted = [v for data in (*passing.values(), *failing.values()) for v in data.values()]
    planted += [shared, url_fail, *marks]
    for text in (cert, key):  # and no line of the PEM bodies
        planted += [line for line in text.splitlines() if len(line) >= 16 and "-----" not in line]
    for run in runs:
        output = run.output
        for value in planted:
            for form in leak_forms(value):
                assert form not in output, "a Secret value (or a form of it) appeared in the output"
