"""Fixtures shared by every test tier. The tiers are pytest markers (see pyproject.toml)."""

from __future__ import annotations

import collections
import hashlib
import json
import os
import pathlib
import signal
import sys
import tempfile
import time
import uuid

import pytest

from testkit import machine
from testkit.controlplane import ControlPlane
from testkit.postgres import Postgres

# `make test` spreads the test files over two pytest-xdist workers. A file stays on one
# worker, so its module fixtures start once; the files below also share a worker because
# they share something the machine has only one of. Every worker starts its own session
# fixtures (control plane, PostgreSQL, Kafka, Dapr), each on free ports and folders of its own.
# Files that must share one worker, by path prefix -> the group's name.
ONE_WORKER = {
    "tests/cluster/test_node": "local-cluster",  # the local single-node cluster: one per machine
    "tests/e2e/": "local-cluster",
    # Not for a shared resource: after the L3 suite on its worker, so that the suite's traffic
    # (testkit/machine.py) does not wait for this 3-minute test on the other worker.
    "tests/integration/test_site_app.py": "local-cluster",
}
# The longest files start first (make test keeps this order: --no-loadscope-reorder), so
# neither worker is left alone with one of them at the end.
LONGEST_FIRST = (
    "tests/cluster/test_node",  # with tests/e2e/: one group, the longest (the L3 suite)
    "tests/e2e/",
    "tests/molecule/",
    "tests/integration/test_site_app.py",
    "collections/ansible_collections/todo/cloud/tests/integration/",
)


def pytest_configure(config):
    if not hasattr(config, "workerinput"):  # the run itself, before its workers start
        handle, path = tempfile.mkstemp(prefix="todo-tests-", suffix=".lock")
        os.close(handle)
        os.environ[machine.VARIABLE] = path


def pytest_unconfigure(config):
    if not hasattr(config, "workerinput"):
        pathlib.Path(os.environ.pop(machine.VARIABLE, "")).unlink(missing_ok=True)


# Where a run's time went: every test phase with its worker, start and end (epoch seconds), in
# artifacts/test-timeline.json. `python -m testkit.timeline` sums it up per worker.
_TIMELINE: list[dict] = []


def pytest_runtest_logreport(report):
    if os.environ.get("PYTEST_XDIST_WORKER"):  # the controller gets every worker's reports
        return
    node = getattr(report, "node", None)  # the xdist worker that ran it
    worker = node.gateway.id if node is not None else "main"
    _TIMELINE.append(
        {
            "worker": worker,
            "test": report.nodeid,
            "phase": report.when,
            "start": report.start,
            "stop": report.stop,
        }
    )


def pytest_sessionfinish(session):
    if _TIMELINE and not hasattr(session.config, "workerinput"):
        path = pathlib.Path(session.config.rootpath, "artifacts", "test-timeline.json")
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps(_TIMELINE))


def pytest_report_header(config):
    """A single-core CPU reference, printed with every run: the same suite has taken 1.3x as
    long from one hour to the next on this machine, so a run's duration says more beside it."""
    started = time.perf_counter()
    digest = b""
    for _ in range(1_000_000):
        digest = hashlib.sha256(digest).digest()
    return f"machine speed: 1,000,000 sha256 rounds in {time.perf_counter() - started:.2f}s"


def pytest_collection_modifyitems(items):
    # xdist schedules by node id: tests sharing one would silently run once.
    counts = collections.Counter(item.nodeid for item in items)
    shared = sorted(nodeid for nodeid, count in counts.items() if count > 1)
    if shared:
        raise pytest.UsageError(f"tests with the same node id (give them ids): {shared[:5]}")

    def rank(item):
        path = item.nodeid.split("::", 1)[0]
        return next(
            (i for i, prefix in enumerate(LONGEST_FIRST) if path.startswith(prefix)), len(LONGEST_FIRST)
        )

    items.sort(key=rank)


def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadFileScheduling

    class FileScheduling(LoadFileScheduling):
        def _split_scope(self, nodeid):
            path = super()._split_scope(nodeid)
            return next((group for prefix, group in ONE_WORKER.items() if path.startswith(prefix)), path)

    return FileScheduling(config, log)


@pytest.fixture(autouse=True)
def _yield_to_the_l3_traffic(request):
    """Every test outside the local cluster's group waits while the L3 suite's traffic has the
    machine (testkit/machine.py); that group runs on one worker, and its traffic takes the
    machine alone."""
    path = request.node.nodeid.split("::", 1)[0]
    if any(path.startswith(prefix) for prefix in ONE_WORKER):
        yield
        return
    with machine.shared():
        yield


@pytest.fixture(scope="session")
def controlplane():
    """A real etcd + kube-apiserver + controller-manager + scheduler + kwok (rung L2)."""
    cp = ControlPlane.create(nodes=int(os.environ.get("TODO_TEST_NODES", "2")))
    # A CI job cancelled with SIGTERM still runs the teardown below.
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        cp.start()
        yield cp
    finally:
        cp.stop()


@pytest.fixture(scope="session")
def k8s(controlplane):
    """kubernetes.client APIs bound to the control plane: k8s.core, k8s.apps, k8s.api_client."""
    from kubernetes import client

    api, _ = controlplane.kubectl_like_client()

    class Apis:
        api_client = api
        core = client.CoreV1Api(api)
        apps = client.AppsV1Api(api)
        autoscaling = client.AutoscalingV2Api(api)
        custom = client.CustomObjectsApi(api)
        coordination = client.CoordinationV1Api(api)

    return Apis


@pytest.fixture
def namespace(k8s):
    """A fresh namespace for one test, deleted afterwards."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    k8s.core.create_namespace({"metadata": {"name": name}})
    yield name
    k8s.core.delete_namespace(name)


@pytest.fixture(scope="session")
def kube_auth(controlplane):
    """Module connection arguments for the control plane."""
    return {"kubeconfig": str(controlplane.kubeconfig_path), "context": controlplane.context}


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL 15 server (Debian's binaries) on a free loopback port."""
    with Postgres.create() as server:
        yield server


@pytest.fixture
def database(postgres):
    """A fresh, empty database for one test; its DSN (postgresql://...)."""
    name = f"t_{uuid.uuid4().hex[:10]}"
    yield postgres.create_database(name)
    postgres.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def kafka():
    """A real Apache Kafka broker (KRaft, single node) reached like Redpanda Cloud: SASL_SSL, SCRAM-SHA-256.

    kafka.bootstrap, kafka.username, kafka.password, kafka.ca_file / kafka.ca_pem;
    kafka.client_config() for confluent-kafka, kafka.create_topic(name, partitions). Topics
    are not auto-created. Dapr's components reach it through the `dapr` fixture.
    """
    from testkit.kafka import Kafka

    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with Kafka.create() as broker:
        yield broker


@pytest.fixture
def kafka_topic(kafka):
    """A fresh topic with 3 partitions for one test; its name. Deleted afterwards."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    yield kafka.create_topic(name, partitions=3)
    kafka.delete_topic(name)


@pytest.fixture(scope="session")
def dapr(kafka, postgres):
    """Real Dapr: the scheduler running and a resources folder with the project's components
    (charts/todo/dapr/) wired to the session's Kafka and PostgreSQL through a local secret store.

    dapr.topics("task-events-ab12", partitions=3) creates topics; dapr.sidecar(app_id,
    app_port, api_token=..., app_token=...) starts a daprd (.env() for the app, .stop(),
    .restart(), .wait_ready(), .tail()). See testkit/dapr.py.
    """
    from testkit.dapr import DaprEnv

    env = DaprEnv.create(kafka=kafka, state_dsn=postgres.create_database("dapr_state"))
    yield env
    env.stop()


@pytest.fixture(scope="session")
def chart_repo(tmp_path_factory):
    """TEST DOUBLE of the Helm chart repositories (none is reachable here): every chart pinned
    in versions.env, each the generic stand-in chart (tests/standin_chart/) that renders its
    values into the ConfigMap `<release>-standin-values`. chart_repo.url; see testkit/chart_repo.py."""
    from testkit.chart_repo import ChartRepo, pinned_charts

    with ChartRepo.serve(pinned_charts(), tmp_path_factory.mktemp("chart-repo")) as repo:
        yield repo
