#!/usr/bin/env python3
"""Benchmark: how long the operator's rollback takes, against the 5 minutes of SC-007 and the
60-second target on the control plane. Prints figures and ratios, never pass/fail.

What runs: the control-plane fixture (real kube-apiserver, controllers and scheduler; pods
simulated by kwok, rung L2), the staging inventory's Secrets with random values, two versions
deployed with `ansible-playbook site.yml -i inventories/staging --tags app`, then
`ansible-playbook playbooks/rollback.yml -i inventories/staging` run `--rounds` times (each
round goes back to the previous revision, so the versions alternate), timed from the command's
start to its exit: preflight, deploy lock, history, helm rollback, the rollout waited for
until every pod is ready (`app_readiness_window`: 20 s here, as in the Molecule scenarios), the
record and the smoke check. The readiness window is part of every figure, by design.
The baseline, in the same run on the same release: a bare `helm rollback --wait` (what an
operator could type: no lock, no checks, no readiness window, no record).

Usage: python -m bench.rollback [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from testkit.ansible import Site, put_app_secrets
from testkit.controlplane import ControlPlane

SC_007_SECONDS = 300
TARGET_SECONDS = 60


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-rollback-") as tmp, ControlPlane.create(nodes=2) as cp:
        from kubernetes import client

        api, _ = cp.kubectl_like_client()
        put_app_secrets(client.CoreV1Api(api), "todo-staging", "staging")
        site = Site(cp.kubeconfig_path, cp.context, Path(tmp))
        for version in ("1.0.0", "1.1.0"):
            site.run("staging", "-e", f"app_image_tag={version}")
        durations = []
        for round_number in range(1, args.rounds + 1):
            load = os.getloadavg()[0]
            start = time.monotonic()
            site.run("staging", playbook="playbooks/rollback.yml")
            durations.append(time.monotonic() - start)
            print(f"rollback {round_number}: {durations[-1]:.1f} s (1-minute load {load:.1f})", flush=True)
        helm = [
            str(Path(__file__).resolve().parent.parent / ".tools" / "bin" / "helm"),
            "rollback",
            "todo",
            "--namespace",
            "todo-staging",
            "--wait",
            "--timeout",
            "5m",
            "--kubeconfig",
            str(cp.kubeconfig_path),
            "--kube-context",
            cp.context,
        ]
        baseline = []
        for round_number in range(1, args.rounds + 1):
            start = time.monotonic()
            subprocess.run(helm, check=True, capture_output=True)
            baseline.append(time.monotonic() - start)
            print(f"baseline helm rollback --wait {round_number}: {baseline[-1]:.1f} s", flush=True)
    median, base = statistics.median(durations), statistics.median(baseline)
    print(
        f"rollback median {median:.1f} s, max {max(durations):.1f} s over {len(durations)} rounds: "
        f"{median / SC_007_SECONDS:.2f}x of SC-007's {SC_007_SECONDS} s, "
        f"{median / TARGET_SECONDS:.2f}x of the {TARGET_SECONDS} s target, "
        f"{median / base:.1f}x a bare helm rollback --wait ({base:.1f} s, same run)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
