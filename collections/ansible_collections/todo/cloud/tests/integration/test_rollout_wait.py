"""todo.cloud.rollout_wait through real ansible-playbook runs against the control plane (rung L2).

The Deployment, StatefulSet and DaemonSet controllers and the scheduler are real; kwok plays
the kubelet, so pods crash-loop, fail to pull or never get ready on request.
"""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from testkit import machine
from testkit.ansible import run_cases, run_playbook
from testkit.workloads import daemonset, deployment, set_behaviour, statefulset, wait_for

pytestmark = pytest.mark.integration

FAST = {"poll_interval": 0.5}


class FirstFailure:
    """Watches a namespace and remembers when a container first showed a failing state."""

    def __init__(self, k8s, namespace):
        self.at = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, args=(k8s, namespace), daemon=True)
        self._thread.start()

    def _watch(self, k8s, namespace):
        while not self._stop.is_set() and self.at is None:
            for pod in k8s.core.list_namespaced_pod(namespace).items:
                for status in pod.status.container_statuses or []:
                    waiting = status.state.waiting
                    if status.restart_count or (
                        waiting and waiting.reason not in (None, "ContainerCreating")
                    ):
                        self.at = time.monotonic()
            time.sleep(0.1)

    def first(self) -> float:
        self._stop.set()
        self._thread.join()
        assert self.at is not None, "no container ever failed"
        return self.at


def wait_task(namespace, kube_auth, **options):
    return {
        "name": "Wait",
        "todo.cloud.rollout_wait": {**kube_auth, "namespace": namespace, **FAST, **options},
    }


def run_wait(tmp_path, namespace, kube_auth, extra_args=(), **options):
    run = run_playbook(tmp_path, [wait_task(namespace, kube_auth, **options)], extra_args=extra_args)
    return run, run.task("Wait")


def create(k8s, namespace, *objects):
    for obj in objects:
        kind = obj["kind"]
        create_fn = {
            "Deployment": k8s.apps.create_namespaced_deployment,
            "StatefulSet": k8s.apps.create_namespaced_stateful_set,
            "DaemonSet": k8s.apps.create_namespaced_daemon_set,
        }[kind]
        create_fn(namespace, obj)


def test_waits_for_a_deployment_to_roll_out(tmp_path, k8s, namespace, kube_auth):
    create(k8s, namespace, deployment("api", replicas=3))
    run, result = run_wait(tmp_path, namespace, kube_auth, name=["api"], timeout=90)
    assert run.rc == 0, run.output
    assert result["ready"] is True and result["changed"] is False
    (api,) = result["workloads"]
    assert api["complete"] and api["updated"] == api["ready"] == api["available"] == 3
    dep = k8s.apps.read_namespaced_deployment("api", namespace)
    assert dep.status.ready_replicas == 3


def test_waits_for_statefulset_and_daemonset(tmp_path, k8s, namespace, kube_auth):
    create(k8s, namespace, statefulset("db"), daemonset("agent"))
    run, result = run_wait(tmp_path, namespace, kube_auth, timeout=90)
    assert run.rc == 0, run.output
    assert {(w["kind"], w["complete"]) for w in result["workloads"]} == {
        ("StatefulSet", True),
        ("DaemonSet", True),
    }


@pytest.mark.parametrize(
    ("make", "behaviour", "reason"),
    [
        (deployment, "crashloop", "CrashLoopBackOff"),
        (deployment, "image-pull", "ImagePull"),  # ErrImagePull or, a moment later, ImagePullBackOff
        (deployment, "config-error", "CreateContainerConfigError"),
        (statefulset, "crashloop", "CrashLoopBackOff"),
        (statefulset, "image-pull", "ImagePull"),
        (daemonset, "crashloop", "CrashLoopBackOff"),
        (daemonset, "config-error", "CreateContainerConfigError"),
    ],
)
def test_fails_fast_with_the_reason(tmp_path, k8s, namespace, kube_auth, make, behaviour, reason):
    obj = make("svc", behaviour=behaviour)
    watcher = FirstFailure(k8s, namespace)
    create(k8s, namespace, obj)
    run, result = run_wait(tmp_path, namespace, kube_auth, timeout=120)
    reported = time.monotonic()
    assert run.rc != 0
    # reported within 15 s of the first failing container state (ansible's own start-up included)
    assert reported - watcher.first() < 15
    msg = run.failure("Wait")
    assert f"{obj['kind']}/svc pod svc-" in msg and "container app" in msg and reason in msg, msg
    assert all(reason in f["reason"] for f in result["failures"]), result


def test_readiness_window(tmp_path, k8s, namespace, kube_auth):
    create(k8s, namespace, deployment("web", behaviour="never-ready"))
    run, result = run_wait(tmp_path, namespace, kube_auth, readiness_window=4, timeout=120)
    assert run.rc != 0
    assert "ReadinessTimeout" in result["msg"] and "running but not ready" in result["msg"]
    assert result["elapsed"] < 15


def test_unschedulable_pods_name_the_scheduler_reason(tmp_path, k8s, namespace, kube_auth):
    create(k8s, namespace, deployment("big", replicas=1, cpu="64"))
    run, result = run_wait(tmp_path, namespace, kube_auth, unschedulable_grace=3, timeout=120)
    assert run.rc != 0
    assert "Unschedulable" in result["msg"] and "Insufficient cpu" in result["msg"], result["msg"]


def test_progress_deadline_exceeded(tmp_path, k8s, namespace, kube_auth):
    create(k8s, namespace, deployment("slow", behaviour="never-ready", progress_deadline=3))
    run, result = run_wait(tmp_path, namespace, kube_auth, readiness_window=600, timeout=120)
    assert run.rc != 0
    assert "ProgressDeadlineExceeded" in result["msg"], result["msg"]
    assert result["elapsed"] < 30


def test_timeout_without_fail_fast_still_diagnoses(tmp_path, k8s, namespace, kube_auth):
    create(k8s, namespace, deployment("stuck", behaviour="crashloop"))
    run, result = run_wait(tmp_path, namespace, kube_auth, fail_fast=False, timeout=6)
    assert run.rc != 0
    assert result["msg"].startswith("timed out after 6s: Deployment/stuck waits for")
    assert "CrashLoopBackOff" in result["msg"]
    assert 6 <= result["elapsed"] < 12


def test_a_failing_old_revision_does_not_fail_a_good_rollout(tmp_path, k8s, namespace, kube_auth):
    create(k8s, namespace, deployment("api", behaviour="crashloop"))
    wait_for(lambda: k8s.core.list_namespaced_pod(namespace).items, what="first pods")
    set_behaviour(k8s, namespace, "api", None)
    run, result = run_wait(tmp_path, namespace, kube_auth, timeout=90)
    assert run.rc == 0, run.output
    assert result["ready"]


def test_second_revision_of_a_failing_rollout_is_caught(tmp_path, k8s, namespace, kube_auth):
    create(k8s, namespace, deployment("api"))
    run, _ = run_wait(tmp_path, namespace, kube_auth, timeout=90)
    assert run.rc == 0, run.output
    set_behaviour(k8s, namespace, "api", "image-pull")
    run, result = run_wait(tmp_path, namespace, kube_auth, timeout=120)
    assert (run.rc != 0 and "ImagePull" in result["msg"]) or "ErrImagePull" in result["msg"]
    # maxUnavailable 0: the old pods are still there, serving
    dep = k8s.apps.read_namespaced_deployment("api", namespace)
    assert dep.status.available_replicas == 2


def test_selection_by_release_and_label(tmp_path, k8s, namespace, kube_auth):
    create(
        k8s,
        namespace,
        deployment("a", annotations={"meta.helm.sh/release-name": "todo"}, labels={"tier": "front"}),
        deployment("b", behaviour="crashloop", labels={"tier": "back"}),
    )
    run, result = run_wait(tmp_path, namespace, kube_auth, release="todo", timeout=60)
    assert run.rc == 0, run.output
    assert [w["name"] for w in result["workloads"]] == ["a"]
    run, result = run_wait(tmp_path, namespace, kube_auth, label_selector="tier in (front)", timeout=60)
    assert run.rc == 0 and [w["name"] for w in result["workloads"]] == ["a"]


def test_check_mode_reports_without_waiting(tmp_path, k8s, namespace, kube_auth):
    create(k8s, namespace, deployment("web", behaviour="never-ready"))
    started = time.monotonic()
    run, result = run_wait(tmp_path, namespace, kube_auth, extra_args=("--check",), timeout=300)
    assert run.rc == 0, run.output
    assert result["ready"] is False and result["changed"] is False
    assert "check mode" in result["msg"]
    assert time.monotonic() - started < 20


BAD_PARAMETERS = {
    "unknown-kind": ({"kinds": ["Job"]}, "value of kinds must be one or more of"),
    "absent-name": ({"name": ["nope"]}, "no Deployment, StatefulSet, DaemonSet named nope in namespace"),
    "bad-selector": ({"label_selector": "app in (a"}, "unable to parse requirement"),
    "negative-timeout": ({"timeout": -1}, "timeout must be zero or more"),
    "unknown-option": ({"bogus": 1}, "Unsupported parameters"),
}


@pytest.fixture(scope="module")
def bad_input_run(tmp_path_factory, k8s, kube_auth):
    """Every bad input below as a task of one playbook (run_cases)."""
    folder = tmp_path_factory.mktemp("bad-input")
    namespace = f"t-{uuid.uuid4().hex[:8]}"  # empty: nothing to wait for
    k8s.core.create_namespace({"metadata": {"name": namespace}})
    tasks = {
        case: wait_task(namespace, kube_auth, **options) for case, (options, _) in BAD_PARAMETERS.items()
    }
    tasks["empty-selection"] = wait_task(namespace, kube_auth)
    tasks["missing-namespace"] = wait_task("does-not-exist", kube_auth)
    (folder / "unreadable").write_text("not: [valid")
    tasks["missing-kubeconfig"] = wait_task("default", {"kubeconfig": str(folder / "missing")})
    tasks["unreadable-kubeconfig"] = wait_task("default", {"kubeconfig": str(folder / "unreadable")})
    tasks["unknown-context"] = wait_task("default", {**kube_auth, "context": "nope"})
    with machine.shared():
        run = run_cases(folder, tasks)
    yield run, namespace
    k8s.core.delete_namespace(namespace)


@pytest.mark.parametrize("case", list(BAD_PARAMETERS))
def test_bad_parameters_fail_clearly(case, bad_input_run):
    assert BAD_PARAMETERS[case][1] in bad_input_run[0].failure(case)


def test_empty_selection_is_an_error(bad_input_run):
    namespace = bad_input_run[1]
    expected = f"no Deployment, StatefulSet, DaemonSet in namespace {namespace}"
    assert bad_input_run[0].failure("empty-selection") == expected


def test_missing_namespace(bad_input_run):
    assert bad_input_run[0].failure("missing-namespace") == "namespace does-not-exist does not exist"


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("missing-kubeconfig", "does not exist"),
        ("unreadable-kubeconfig", "could not load the cluster connection"),
        ("unknown-context", "could not load the cluster connection"),
    ],
)
def test_connection_problems_fail_clearly(case, expected, bad_input_run):
    assert expected in bad_input_run[0].failure(case)
