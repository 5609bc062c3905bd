"""Unit tests (rung L0) of the rollout progress and diagnosis rules."""

from __future__ import annotations

import pytest
from ansible_collections.todo.cloud.plugins.module_utils import rollout

pytestmark = pytest.mark.unit


def deployment(
    replicas=2,
    generation=2,
    observed=2,
    updated=2,
    ready=2,
    available=2,
    current=2,
    conditions=(),
    paused=False,
    revision="2",
):
    return {
        "kind": "Deployment",
        "metadata": {
            "name": "api",
            "uid": "dep-uid",
            "generation": generation,
            "annotations": {rollout.REVISION_ANNOTATION: revision},
        },
        "spec": {"replicas": replicas, "paused": paused},
        "status": {
            "observedGeneration": observed,
            "updatedReplicas": updated,
            "readyReplicas": ready,
            "availableReplicas": available,
            "replicas": current,
            "conditions": list(conditions),
        },
    }


def replicaset(uid, revision, conditions=()):
    return {
        "metadata": {
            "name": f"api-{uid}",
            "uid": uid,
            "annotations": {rollout.REVISION_ANNOTATION: revision},
            "ownerReferences": [{"uid": "dep-uid"}],
        },
        "status": {"conditions": list(conditions)},
    }


def pod(name, owner, *, containers=None, conditions=None, phase="Running", labels=None, init=None):
    return {
        "metadata": {
            "name": name,
            "uid": f"uid-{name}",
            "ownerReferences": [{"uid": owner}],
            "labels": labels or {},
        },
        "status": {
            "phase": phase,
            "conditions": conditions or [],
            "containerStatuses": containers or [],
            "initContainerStatuses": init or [],
        },
    }


def waiting(reason, restarts=0, message="", name="app", last_exit=None):
    status = {
        "name": name,
        "image": "img:1",
        "ready": False,
        "restartCount": restarts,
        "state": {"waiting": {"reason": reason, "message": message}},
    }
    if last_exit is not None:
        status["lastState"] = {"terminated": {"exitCode": last_exit, "reason": "Error"}}
    return status


def running(ready, name="app"):
    return {"name": name, "ready": ready, "restartCount": 0, "state": {"running": {"startedAt": "x"}}}


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def failures_for(pods, *, now=0.0, clock=None, **limits):
    limits = {"crash_loop_restarts": 2, "readiness_window": 60, "unschedulable_grace": 30, **limits}
    fake = FakeClock()
    clock = clock or rollout.PodClock(fake)
    found = rollout.pod_failures(deployment(), pods, [], clock, **limits)
    if now:
        fake.now = now
        found = rollout.pod_failures(deployment(), pods, [], clock, **limits)
    return found


def test_complete_deployment():
    report = rollout.progress(deployment())
    assert report["complete"] and report["waiting_for"] == []


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"observed": 1}, "observe generation 2"),
        ({"updated": 1}, "1 pod(s) to be updated"),
        ({"ready": 1}, "1 pod(s) to become ready"),
        ({"available": 0}, "2 pod(s) to become available"),
        ({"current": 3}, "1 old pod(s) to terminate"),
    ],
)
def test_incomplete_deployment_says_what_it_waits_for(kwargs, expected):
    report = rollout.progress(deployment(**kwargs))
    assert not report["complete"]
    assert any(expected in w for w in report["waiting_for"])


def test_scaled_to_zero_is_complete():
    assert rollout.progress(deployment(replicas=0, updated=0, ready=0, available=0, current=0))["complete"]


def test_statefulset_partition_and_revisions():
    sts = {
        "kind": "StatefulSet",
        "metadata": {"name": "db", "uid": "s", "generation": 3},
        "spec": {
            "replicas": 3,
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 2}},
        },
        "status": {
            "observedGeneration": 3,
            "updatedReplicas": 1,
            "readyReplicas": 3,
            "availableReplicas": 3,
            "replicas": 3,
            "currentRevision": "a",
            "updateRevision": "b",
        },
    }
    assert rollout.progress(sts)["complete"]
    sts["spec"]["updateStrategy"]["rollingUpdate"]["partition"] = 0
    assert not rollout.progress(sts)["complete"]


def test_daemonset_progress():
    ds = {
        "kind": "DaemonSet",
        "metadata": {"name": "agent", "uid": "d", "generation": 2},
        "spec": {},
        "status": {
            "observedGeneration": 2,
            "desiredNumberScheduled": 2,
            "updatedNumberScheduled": 1,
            "numberReady": 2,
            "numberAvailable": 2,
        },
    }
    assert not rollout.progress(ds)["complete"]
    ds["status"]["updatedNumberScheduled"] = 2
    assert rollout.progress(ds)["complete"]


def test_new_pods_are_those_of_the_newest_replicaset():
    rss = [replicaset("old", "1"), replicaset("new", "2")]
    pods = [pod("a", "old"), pod("b", "new"), pod("c", "stranger")]
    assert [p["metadata"]["name"] for p in rollout.new_pods(deployment(), rss, pods)] == ["b"]


def test_new_pods_of_statefulset_use_update_revision():
    sts = {
        "kind": "StatefulSet",
        "metadata": {"name": "db", "uid": "s"},
        "status": {"updateRevision": "db-2"},
    }
    pods = [
        pod("db-0", "s", labels={"controller-revision-hash": "db-1"}),
        pod("db-1", "s", labels={"controller-revision-hash": "db-2"}),
    ]
    assert [p["metadata"]["name"] for p in rollout.new_pods(sts, [], pods)] == ["db-1"]


@pytest.mark.parametrize("reason", ["ErrImagePull", "ImagePullBackOff", "InvalidImageName"])
def test_image_pull_failures_are_immediate(reason):
    found = failures_for([pod("p", "new", containers=[waiting(reason, message="not found")])])
    assert [(f["reason"], f["pod"], f["container"]) for f in found] == [(reason, "p", "app")]


def test_config_error_is_immediate():
    found = failures_for(
        [pod("p", "new", containers=[waiting("CreateContainerConfigError", message='secret "x" not found')])]
    )
    assert found[0]["reason"] == "CreateContainerConfigError"
    assert 'secret "x" not found' in found[0]["message"]


def test_crash_loop_needs_the_restart_threshold():
    assert failures_for([pod("p", "new", containers=[waiting("CrashLoopBackOff", restarts=1)])]) == []
    found = failures_for(
        [pod("p", "new", containers=[waiting("CrashLoopBackOff", restarts=2, last_exit=137)])]
    )
    assert found[0]["reason"] == "CrashLoopBackOff"
    assert "restarted 2 times" in found[0]["message"] and "exit code 137" in found[0]["message"]


def test_crash_loop_in_an_init_container_is_found():
    found = failures_for(
        [
            pod(
                "p",
                "new",
                containers=[waiting("PodInitializing")],
                init=[waiting("CrashLoopBackOff", restarts=3, name="migrate")],
            )
        ]
    )
    assert found[0]["container"] == "migrate"


def test_unready_pod_fails_only_after_the_window():
    pods = [pod("p", "new", containers=[running(False)], conditions=[{"type": "Ready", "status": "False"}])]
    assert failures_for(pods, now=59) == []
    found = failures_for(pods, now=61)
    assert found[0]["reason"] == "ReadinessTimeout" and found[0]["container"] == "app"


def test_readiness_failure_quotes_the_probe_event():
    fake = FakeClock()
    clock = rollout.PodClock(fake)
    pods = [pod("p", "new", containers=[running(False)], conditions=[{"type": "Ready", "status": "False"}])]
    events = [
        {
            "involvedObject": {"uid": "uid-p"},
            "reason": "Unhealthy",
            "lastTimestamp": "2026-01-01T00:00:01Z",
            "message": "Readiness probe failed: HTTP probe failed with statuscode: 503",
        }
    ]
    limits = {"crash_loop_restarts": 2, "readiness_window": 5, "unschedulable_grace": 30}
    rollout.pod_failures(deployment(), pods, events, clock, **limits)
    fake.now = 6
    found = rollout.pod_failures(deployment(), pods, events, clock, **limits)
    assert "statuscode: 503" in found[0]["message"]


def test_ready_again_resets_the_window():
    fake = FakeClock()
    clock = rollout.PodClock(fake)
    limits = {"crash_loop_restarts": 2, "readiness_window": 10, "unschedulable_grace": 30}
    unready = [
        pod("p", "new", containers=[running(False)], conditions=[{"type": "Ready", "status": "False"}])
    ]
    ready = [pod("p", "new", containers=[running(True)], conditions=[{"type": "Ready", "status": "True"}])]
    rollout.pod_failures(deployment(), unready, [], clock, **limits)
    fake.now = 8
    rollout.pod_failures(deployment(), ready, [], clock, **limits)
    fake.now = 12
    assert rollout.pod_failures(deployment(), unready, [], clock, **limits) == []


def test_unschedulable_after_grace_names_the_scheduler_message():
    pods = [
        pod(
            "p",
            "new",
            phase="Pending",
            conditions=[
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": "0/2 nodes are available: 2 Insufficient cpu.",
                }
            ],
        )
    ]
    assert failures_for(pods, now=10) == []
    found = failures_for(pods, now=31)
    assert found[0]["reason"] == "Unschedulable" and "Insufficient cpu" in found[0]["message"]


def test_terminating_pods_are_ignored():
    p = pod("p", "new", containers=[waiting("ErrImagePull")])
    p["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert failures_for([p]) == []


def test_progress_deadline_and_replica_failure():
    dep = deployment(
        updated=1,
        conditions=[
            {
                "type": "Progressing",
                "status": "False",
                "reason": "ProgressDeadlineExceeded",
                "message": 'ReplicaSet "api-2" has timed out progressing.',
            }
        ],
    )
    found = rollout.workload_failures(dep, [], [], "")
    assert found[0]["reason"] == "ProgressDeadlineExceeded"
    rs = replicaset(
        "new",
        "2",
        conditions=[
            {
                "type": "ReplicaFailure",
                "status": "True",
                "reason": "FailedCreate",
                "message": "pods is forbidden: exceeded quota",
            }
        ],
    )
    found = rollout.workload_failures(deployment(updated=1), [rs], [], "")
    assert found[0]["reason"] == "FailedCreate" and "exceeded quota" in found[0]["message"]


def test_paused_deployment_is_reported():
    assert rollout.workload_failures(deployment(paused=True), [], [], "")[0]["reason"] == "Paused"


def test_statefulset_failed_create_event_must_be_recent():
    sts = {"kind": "StatefulSet", "metadata": {"name": "db", "uid": "s"}, "spec": {}, "status": {}}
    event = {
        "involvedObject": {"uid": "s"},
        "reason": "FailedCreate",
        "message": "forbidden",
        "lastTimestamp": "2026-01-01T00:00:00Z",
    }
    assert rollout.workload_failures(sts, [], [event], "2026-01-02T00:00:00Z") == []
    assert rollout.workload_failures(sts, [], [event], "2025-12-31T00:00:00Z")[0]["reason"] == "FailedCreate"


def test_describe_is_one_line_per_failure():
    text = rollout.describe(
        [
            {
                "kind": "Deployment",
                "name": "api",
                "pod": "api-1",
                "container": "app",
                "reason": "ErrImagePull",
                "message": "not found",
            },
            {
                "kind": "Deployment",
                "name": "web",
                "pod": None,
                "container": None,
                "reason": "Paused",
                "message": "x",
            },
        ]
    )
    assert (
        text == "Deployment/api pod api-1 container app: ErrImagePull: not found; Deployment/web: Paused: x"
    )
