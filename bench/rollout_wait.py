#!/usr/bin/env python3
"""Benchmark: control-plane start, and how fast rollout_wait reports a failed rollout.

Prints figures and ratios against baselines measured in the same run, never pass/fail:
- control-plane start: the first start of this process (cold) and the next ones (warm);
- for each failure mode, seconds from the first failing container state to the end of
  the `ansible-playbook` run of todo.cloud.rollout_wait (ansible's start-up included),
  next to kubernetes.core.k8s with `wait: true` on the same kind of rollout (the
  mainstream waiter), which can only sit out its wait_timeout and cannot say why.

Usage: python bench/rollout_wait.py [--starts 3] [--baseline-timeout 60]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from testkit.ansible import run_playbook
from testkit.controlplane import ControlPlane
from testkit.workloads import deployment

MODES = [
    ("crashloop", {}),
    ("image-pull", {}),
    ("config-error", {}),
    ("never-ready", {"readiness_window": 10}),
]


DROPPABLE = Path("/proc/sys/vm/drop_caches")


def drop_page_cache() -> None:
    """Make the first start cold: binaries and CRDs read from disk, not memory (needs root)."""
    try:
        subprocess.run(["sync"], check=True)
        DROPPABLE.write_text("3\n")
    except OSError:
        print("  (cannot drop the page cache without root: the first start is only process-cold)")


def first_failure(core, namespace: str, stop: threading.Event, out: dict) -> None:
    while not stop.is_set() and "at" not in out:
        for pod in core.list_namespaced_pod(namespace).items:
            for status in pod.status.container_statuses or []:
                waiting = status.state.waiting
                failing = status.restart_count or (waiting and waiting.reason != "ContainerCreating")
                never_ready = status.state.running and not status.ready
                if failing or never_ready:
                    out.setdefault("at", time.monotonic())
        time.sleep(0.05)


def measure(cp: ControlPlane, behaviour: str, task: dict) -> tuple[float, str]:
    _, client = cp.kubectl_like_client()
    api, _ = cp.kubectl_like_client()
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    namespace = f"bench-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": namespace}})
    stop, seen = threading.Event(), {}
    watcher = threading.Thread(target=first_failure, args=(core, namespace, stop, seen), daemon=True)
    watcher.start()
    apps.create_namespaced_deployment(namespace, deployment("svc", behaviour=behaviour))
    module, args = next(iter(task.items()))
    args = {**args, "kubeconfig": str(cp.kubeconfig_path), "namespace": namespace}
    if module == "kubernetes.core.k8s":
        args["definition"] = deployment("svc", behaviour=behaviour)
    with tempfile.TemporaryDirectory() as tmp:
        run = run_playbook(Path(tmp), [{"name": "Wait", module: args}])
    ended = time.monotonic()
    stop.set()
    watcher.join()
    core.delete_namespace(namespace)
    message = run.task("Wait").get("msg", "")
    return ended - seen.get("at", ended), message


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=3, help="control-plane starts to time")
    parser.add_argument(
        "--baseline-timeout", type=int, default=60, help="wait_timeout for kubernetes.core.k8s"
    )
    args = parser.parse_args()

    print("control-plane start (etcd, kube-apiserver, controller-manager, scheduler, kwok, CRDs, 2 nodes)")
    starts = []
    for i in range(args.starts):
        if i == 0:
            drop_page_cache()
        with ControlPlane.create(nodes=2) as cp:
            starts.append(cp.timings["ready"])
        label = "cold: page cache dropped first" if i == 0 and DROPPABLE.exists() else "warm"
        print(f"  start {i + 1}: {starts[-1]:.1f}s ({label})")
    warm = starts[1:] or starts
    print(f"  cold {starts[0]:.1f}s, warm median {sorted(warm)[len(warm) // 2]:.1f}s")

    print(
        f"\nfailure report time, from the first failing container state (baseline: kubernetes.core.k8s "
        f"wait, wait_timeout={args.baseline_timeout}s)"
    )
    with ControlPlane.create(nodes=2) as cp:
        baseline, message = measure(
            cp,
            "crashloop",
            {
                "kubernetes.core.k8s": {
                    "wait": True,
                    "wait_timeout": args.baseline_timeout,
                    "state": "present",
                }
            },
        )
        print(f"  baseline k8s wait on a crash loop: {baseline:.1f}s; says: {message[:120]!r}")
        for behaviour, options in MODES:
            seconds, message = measure(
                cp, behaviour, {"todo.cloud.rollout_wait": {"timeout": 600, "poll_interval": 0.5, **options}}
            )
            print(
                f"  rollout_wait {behaviour:13} {seconds:5.1f}s  = {seconds / 600:.3f} of its 600s timeout, "
                f"{seconds / baseline:.2f}x the baseline; says: {message[:110]!r}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
