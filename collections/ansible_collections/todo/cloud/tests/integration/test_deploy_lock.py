"""Integration tests of todo.cloud.deploy_lock: real ansible-playbook runs against a real
kube-apiserver (rung L1: a Lease needs no controller)."""

from __future__ import annotations

import contextlib
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from testkit.ansible import run_cases, run_playbook

pytestmark = pytest.mark.integration

TASK = "Deploy lock"


def lock_task(kube_auth, namespace, holder, **options) -> dict:
    return {
        "name": TASK,
        "todo.cloud.deploy_lock": {**kube_auth, "namespace": namespace, "holder": holder, **options},
    }


def lock(tmp_path, kube_auth, namespace, holder, *args, **options):
    run = run_playbook(tmp_path, [lock_task(kube_auth, namespace, holder, **options)], extra_args=args)
    return run, run.task(TASK)


def lease(k8s, namespace, name="todo-deploy"):
    return k8s.coordination.read_namespaced_lease(name, namespace)


def test_take_renew_release(tmp_path, k8s, namespace, kube_auth):
    run, taken = lock(tmp_path, kube_auth, namespace, "run-1", info={"version": "1.2.3", "actor": "ci"})
    assert run.rc == 0 and taken["outcome"] == "created" and taken["changed"]
    first = lease(k8s, namespace)
    assert first.spec.holder_identity == "run-1" and first.spec.lease_duration_seconds == 1800
    assert first.metadata.annotations == {"todo.cloud/version": "1.2.3", "todo.cloud/actor": "ci"}

    run, renewed = lock(tmp_path, kube_auth, namespace, "run-1")
    assert renewed["outcome"] == "renewed" and renewed["acquired"]
    second = lease(k8s, namespace)
    assert second.spec.acquire_time == first.spec.acquire_time
    assert second.spec.renew_time > first.spec.renew_time

    run, released = lock(tmp_path, kube_auth, namespace, "run-1", state="absent")
    assert released["outcome"] == "released" and released["changed"]
    assert k8s.coordination.list_namespaced_lease(namespace).items == []
    run, again = lock(tmp_path, kube_auth, namespace, "run-1", state="absent")
    assert again["outcome"] == "none" and not again["changed"]


def test_a_held_lock_fails_naming_the_holder(tmp_path, k8s, namespace, kube_auth):
    lock(tmp_path, kube_auth, namespace, "github-77-1", info={"version": "2.0.0"})
    run, refused = lock(tmp_path, kube_auth, namespace, "alice@laptop")
    assert run.rc != 0 and refused["failed"]
    assert "another deploy is running" in refused["msg"]
    assert "held by github-77-1" in refused["msg"] and "version=2.0.0" in refused["msg"]
    assert lease(k8s, namespace).spec.holder_identity == "github-77-1"
    # Releasing someone else's lock leaves it alone.
    run, left = lock(tmp_path, kube_auth, namespace, "alice@laptop", state="absent")
    assert run.rc == 0 and left["outcome"] == "held" and not left["changed"]
    assert lease(k8s, namespace).spec.holder_identity == "github-77-1"


def module_running(name: str, tmp_path: Path) -> bool:
    """This test's module process is up (run_playbook puts Ansible's temp files in tmp_path)."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            text = cmdline.read_bytes()
            if f"AnsiballZ_{name}".encode() in text and str(tmp_path).encode() in text:
                return True
    return False


def test_waits_for_the_holder_to_release(tmp_path, k8s, namespace, kube_auth):
    lock(tmp_path, kube_auth, namespace, "first")
    done = threading.Event()

    def release_once_the_waiter_runs():
        while not module_running("deploy_lock", tmp_path) and not done.wait(0.1):
            pass
        # The module's first read comes within a second or two of its process starting (more
        # on a loaded machine); 8 s later it has certainly been waiting.
        if not done.wait(8):
            k8s.coordination.delete_namespaced_lease("todo-deploy", namespace)

    releaser = threading.Thread(target=release_once_the_waiter_runs)
    releaser.start()
    try:
        run, taken = lock(tmp_path, kube_auth, namespace, "second", wait_timeout=120, poll_interval=0.5)
    finally:
        done.set()
        releaser.join()
    assert run.rc == 0 and taken["acquired"] and taken["outcome"] == "created"
    assert taken["waited"] > 0
    assert lease(k8s, namespace).spec.holder_identity == "second"


def test_an_expired_lock_of_a_killed_run_is_taken_over(tmp_path, k8s, namespace, kube_auth):
    lock(tmp_path, kube_auth, namespace, "killed-run", lease_seconds=10)
    stale = lease(k8s, namespace)
    stale.spec.renew_time = datetime.now(UTC) - timedelta(seconds=60)
    k8s.coordination.replace_namespaced_lease("todo-deploy", namespace, stale)
    run, taken = lock(tmp_path, kube_auth, namespace, "next-run")
    assert run.rc == 0 and taken["outcome"] == "taken" and taken["previous_holder"] == "killed-run"
    assert lease(k8s, namespace).spec.lease_transitions == 1


def test_check_mode_writes_nothing(tmp_path, k8s, namespace, kube_auth):
    run, free = lock(tmp_path, kube_auth, namespace, "dry", "--check")
    assert run.rc == 0 and free["acquired"] and not free["changed"]
    assert k8s.coordination.list_namespaced_lease(namespace).items == []
    lock(tmp_path, kube_auth, namespace, "real")
    run, held = lock(tmp_path, kube_auth, namespace, "dry", "--check")
    assert run.rc == 0 and held["outcome"] == "held" and not held["acquired"]


def test_two_runs_racing_for_a_free_lock_never_both_win(tmp_path, k8s, namespace, kube_auth):
    def attempt(n: int):
        folder = tmp_path / f"run-{n}"
        folder.mkdir()
        return lock(folder, kube_auth, namespace, f"racer-{n}")[1]

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(attempt, range(4)))
    winners = [r for r in results if r.get("acquired")]
    assert len(winners) == 1, results
    assert lease(k8s, namespace).spec.holder_identity == winners[0]["holder"]


BAD_INPUT = {
    "blank-holder": ({"holder": " "}, "holder must not be empty"),
    "short-lease": ({"lease_seconds": 5}, "lease_seconds must be at least 10"),
    "missing-namespace": ({"namespace": "no-such-namespace"}, "namespace no-such-namespace does not exist"),
}


def test_bad_input_is_refused_clearly(tmp_path, namespace, kube_auth):
    run = run_cases(
        tmp_path,
        {
            case: {
                "todo.cloud.deploy_lock": {**kube_auth, "namespace": namespace, "holder": "run", **options}
            }
            for case, (options, _) in BAD_INPUT.items()
        },
    )
    for case, (_, message) in BAD_INPUT.items():
        assert message in run.failure(case), case


def test_waiting_is_bounded(tmp_path, namespace, kube_auth):
    lock(tmp_path, kube_auth, namespace, "holder")
    started = time.monotonic()
    run, refused = lock(tmp_path, kube_auth, namespace, "waiter", wait_timeout=3, poll_interval=0.5)
    assert run.rc != 0 and "waited 3s" in refused["msg"]
    assert time.monotonic() - started < 30
