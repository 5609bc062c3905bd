# Copyright: (c) 2026, Todo platform team
# Apache License 2.0
"""Rollout progress and diagnosis, as pure functions over API objects (plain dicts).

`progress()` says whether a Deployment, StatefulSet or DaemonSet has finished rolling out;
`new_pods()` finds the pods of its newest revision; `diagnose()` says why those pods can
never get there. No Kubernetes client here: the module feeds in what it read, the unit
tests feed in what they made up.
"""

from __future__ import annotations

KINDS = ("Deployment", "StatefulSet", "DaemonSet")

# Waiting reasons that do not go away without a new image, Secret or spec.
IMAGE_REASONS = frozenset(
    {
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "ErrImageNeverPull",
        "RegistryUnavailable",
        "SignatureValidationFailed",
    }
)
CONFIG_REASONS = frozenset(
    {
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
        "PreCreateHookError",
        "PreStartHookError",
        "PostStartHookError",
    }
)
REVISION_ANNOTATION = "deployment.kubernetes.io/revision"


def _int(value) -> int:
    return int(value or 0)


def _conditions(obj: dict) -> dict:
    return {c.get("type"): c for c in (obj.get("status") or {}).get("conditions") or []}


def _owned_by(obj: dict, uid: str) -> bool:
    return any(ref.get("uid") == uid for ref in (obj.get("metadata") or {}).get("ownerReferences") or [])


def progress(obj: dict) -> dict:
    """Where the rollout of one workload stands, and what it still waits for."""
    kind = obj["kind"]
    meta, spec, status = obj["metadata"], obj.get("spec") or {}, obj.get("status") or {}
    generation, observed = _int(meta.get("generation")), _int(status.get("observedGeneration"))
    report = {"kind": kind, "name": meta["name"], "generation": generation, "observed_generation": observed}
    if kind == "DaemonSet":
        desired = _int(status.get("desiredNumberScheduled"))
        counts = {
            "desired": desired,
            "updated": _int(status.get("updatedNumberScheduled")),
            "ready": _int(status.get("numberReady")),
            "available": _int(status.get("numberAvailable")),
            "current": _int(status.get("currentNumberScheduled")),
        }
    else:
        desired = _int(spec.get("replicas", 1))
        counts = {
            "desired": desired,
            "updated": _int(status.get("updatedReplicas")),
            "ready": _int(status.get("readyReplicas")),
            "available": _int(status.get("availableReplicas")),
            "current": _int(status.get("replicas")),
        }
    report.update(counts)
    waits = []
    if observed < generation:
        waits.append(f"the controller to observe generation {generation} (seen {observed})")
    else:
        partition = 0
        if kind == "StatefulSet":
            strategy = spec.get("updateStrategy") or {}
            partition = _int((strategy.get("rollingUpdate") or {}).get("partition"))
            if strategy.get("type") == "OnDelete":
                partition = desired  # pods are only replaced when someone deletes them
        if counts["updated"] < desired - partition:
            waits.append(f"{desired - partition - counts['updated']} pod(s) to be updated")
        if counts["ready"] < desired:
            waits.append(f"{desired - counts['ready']} pod(s) to become ready")
        if counts["available"] < desired:
            waits.append(f"{desired - counts['available']} pod(s) to become available")
        if kind != "DaemonSet" and counts["current"] > desired:
            waits.append(f"{counts['current'] - desired} old pod(s) to terminate")
        if (
            kind == "StatefulSet"
            and partition == 0
            and status.get("updateRevision")
            and (status.get("currentRevision") != status.get("updateRevision"))
            and counts["updated"] < desired
        ):
            waits.append("the update revision to become current")
    report["complete"] = not waits
    report["waiting_for"] = waits
    return report


def new_pods(obj: dict, replicasets: list[dict], pods: list[dict]) -> list[dict]:
    """Pods of the workload's newest revision (for a Deployment: of its newest ReplicaSet)."""
    uid = obj["metadata"]["uid"]
    kind = obj["kind"]
    if kind == "Deployment":
        revision = (obj["metadata"].get("annotations") or {}).get(REVISION_ANNOTATION)
        owned = [rs for rs in replicasets if _owned_by(rs, uid)]
        current = [
            rs
            for rs in owned
            if (rs["metadata"].get("annotations") or {}).get(REVISION_ANNOTATION) == revision
        ]
        if not current:
            return []
        rs_uid = current[0]["metadata"]["uid"]
        return [p for p in pods if _owned_by(p, rs_uid)]
    owned = [p for p in pods if _owned_by(p, uid)]
    if kind == "StatefulSet":
        revision = (obj.get("status") or {}).get("updateRevision")
        label = "controller-revision-hash"
    else:
        revision = str(obj["metadata"].get("generation"))
        label = "pod-template-generation"
    if not revision:
        return owned
    return [p for p in owned if (p["metadata"].get("labels") or {}).get(label) == revision]


def failure(
    obj: dict, reason: str, message: str, pod: str | None = None, container: str | None = None
) -> dict:
    return {
        "kind": obj["kind"],
        "name": obj["metadata"]["name"],
        "pod": pod,
        "container": container,
        "reason": reason,
        "message": message,
    }


def workload_failures(obj: dict, replicasets: list[dict], events: list[dict], since: str) -> list[dict]:
    """Failures the controllers report on the workload itself (or its newest ReplicaSet)."""
    found = []
    if obj["kind"] == "Deployment":
        if (obj.get("spec") or {}).get("paused"):
            found.append(failure(obj, "Paused", "the Deployment is paused; resume it to roll out"))
        conds = _conditions(obj)
        prog = conds.get("Progressing") or {}
        if prog.get("status") == "False" and prog.get("reason") == "ProgressDeadlineExceeded":
            found.append(failure(obj, "ProgressDeadlineExceeded", prog.get("message", "")))
        sources = [obj, *[rs for rs in replicasets if _owned_by(rs, obj["metadata"]["uid"])]]
        for source in sources:
            cond = _conditions(source).get("ReplicaFailure") or {}
            if cond.get("status") == "True":
                found.append(failure(obj, cond.get("reason") or "ReplicaFailure", cond.get("message", "")))
                break
    else:
        uid = obj["metadata"]["uid"]
        for event in events:
            involved = event.get("involvedObject") or {}
            if (
                involved.get("uid") == uid
                and event.get("reason") == "FailedCreate"
                and _event_time(event) >= since
            ):
                found.append(failure(obj, "FailedCreate", event.get("message", "")))
                break
    return found


def _event_time(event: dict) -> str:
    return (
        event.get("lastTimestamp")
        or event.get("eventTime")
        or (event.get("metadata") or {}).get("creationTimestamp")
        or ""
    )


def _last_probe_message(pod: dict, events: list[dict]) -> str:
    uid = pod["metadata"]["uid"]
    mine = [
        e
        for e in events
        if (e.get("involvedObject") or {}).get("uid") == uid and e.get("reason") == "Unhealthy"
    ]
    if not mine:
        return ""
    return max(mine, key=_event_time).get("message", "")


def _describe_last_exit(status: dict) -> str:
    last = (status.get("lastState") or {}).get("terminated") or {}
    if not last:
        return ""
    bits = [f"exit code {last.get('exitCode')}"]
    if last.get("reason"):
        bits.append(last["reason"])
    if last.get("message"):
        bits.append(last["message"].strip()[:300])
    return "last exit: " + ", ".join(bits)


def pod_failures(
    obj: dict,
    pods: list[dict],
    events: list[dict],
    clock: PodClock,
    *,
    crash_loop_restarts: int,
    readiness_window: float,
    unschedulable_grace: float,
) -> list[dict]:
    """Why the given pods (the newest revision's) cannot become ready."""
    found = []
    for pod in pods:
        meta, status = pod["metadata"], pod.get("status") or {}
        if meta.get("deletionTimestamp"):
            continue
        name, uid = meta["name"], meta["uid"]
        conds = _conditions(pod)
        scheduled = conds.get("PodScheduled") or {}
        if scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable":
            seen = clock.since(uid, "unschedulable")
            if seen >= unschedulable_grace:
                found.append(
                    failure(
                        obj,
                        "Unschedulable",
                        f"no node can run it for {seen:.0f}s: {scheduled.get('message', '')}",
                        pod=name,
                    )
                )
            continue
        clock.clear(uid, "unschedulable")
        statuses = [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]
        pod_problem = False
        for cstat in statuses:
            cname = cstat.get("name")
            waiting = (cstat.get("state") or {}).get("waiting") or {}
            terminated = (cstat.get("state") or {}).get("terminated") or {}
            reason = waiting.get("reason") or ""
            restarts = _int(cstat.get("restartCount"))
            if reason in IMAGE_REASONS:
                found.append(
                    failure(
                        obj,
                        reason,
                        waiting.get("message") or f"cannot pull {cstat.get('image')}",
                        pod=name,
                        container=cname,
                    )
                )
                pod_problem = True
            elif reason in CONFIG_REASONS:
                found.append(
                    failure(
                        obj,
                        reason,
                        waiting.get("message") or "container cannot be created",
                        pod=name,
                        container=cname,
                    )
                )
                pod_problem = True
            elif (reason == "CrashLoopBackOff" or (terminated and terminated.get("exitCode"))) and (
                restarts >= crash_loop_restarts
            ):
                detail = _describe_last_exit(cstat) or (
                    f"exit code {terminated.get('exitCode')} {terminated.get('reason') or ''}".strip()
                )
                found.append(
                    failure(
                        obj,
                        "CrashLoopBackOff",
                        f"restarted {restarts} times; {detail}".rstrip("; "),
                        pod=name,
                        container=cname,
                    )
                )
                pod_problem = True
        ready = (conds.get("Ready") or {}).get("status") == "True"
        containers = status.get("containerStatuses") or []
        running = (
            status.get("phase") == "Running"
            and containers
            and all((c.get("state") or {}).get("running") for c in containers)
        )
        if running and not ready and not pod_problem:
            seen = clock.since(uid, "unready")
            if seen >= readiness_window:
                unready = [c.get("name") for c in containers if not c.get("ready")]
                probe = _last_probe_message(pod, events)
                found.append(
                    failure(
                        obj,
                        "ReadinessTimeout",
                        f"running but not ready for {seen:.0f}s"
                        + (f"; {probe}" if probe else "; readiness probe not passing"),
                        pod=name,
                        container=", ".join(unready) or None,
                    )
                )
        else:
            clock.clear(uid, "unready")
    return found


class PodClock:
    """Remembers since when (by our own monotonic clock) a pod has been in a state."""

    def __init__(self, now):
        self._now = now
        self._first: dict[tuple[str, str], float] = {}

    def since(self, uid: str, state: str) -> float:
        key = (uid, state)
        start = self._first.setdefault(key, self._now())
        return self._now() - start

    def clear(self, uid: str, state: str) -> None:
        self._first.pop((uid, state), None)


def describe(failures: list[dict]) -> str:
    """One line per failure: Kind/name pod/container: Reason: message."""
    lines = []
    for f in failures:
        where = f"{f['kind']}/{f['name']}"
        if f.get("pod"):
            where += f" pod {f['pod']}"
        if f.get("container"):
            where += f" container {f['container']}"
        lines.append(f"{where}: {f['reason']}: {f['message']}".rstrip(": "))
    return "; ".join(lines)
