#!/usr/bin/env python3
"""Benchmark: CPU per publish of ``todo_shared.dapr.DaprClient`` (the outbox relay's hot path),
next to a plain ``httpx.AsyncClient`` POST of the same request, measured in the same run.
Prints figures and the ratio, never pass/fail.

What runs (this machine, loopback): the stand-in for the Dapr sidecar
(``todo_shared.testing.DaprSidecarStandIn``) in its own process, as bench/api.py runs it; this
process publishes CloudEvents of the size the api's relay sends (a task snapshot), from
``--concurrency`` tasks in a closed loop. CPU is this process's user + system time (the
sidecar's is not counted), divided by the number of publishes.

Usage: python -m bench.dapr_publish [--count 5000] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
import uuid

from bench.api import SNAPSHOT, start_sidecar, stop


def cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def envelope() -> dict:
    from todo_shared.dapr import cloud_event

    event_id = str(uuid.uuid4())
    data = {
        "event_id": event_id,
        "type": "task.created",
        "user_id": str(uuid.uuid4()),
        "task_id": SNAPSHOT["id"],
        "occurred_at": "2025-01-01T00:00:00+00:00",
        "task": SNAPSHOT,
    }
    return cloud_event(event_id, "task.created", "todo-api", data, subject=SNAPSHOT["id"])


async def measure(name: str, publish, count: int, concurrency: int) -> float:
    """CPU µs per call of ``await publish(event)``, after a warm-up."""
    event = envelope()

    async def worker(n: int) -> None:
        for _ in range(n):
            await publish(event)

    await asyncio.gather(*(worker(50) for _ in range(concurrency)))  # warm-up, connections open
    started, wall = cpu_seconds(), time.perf_counter()
    await asyncio.gather(*(worker(count // concurrency) for _ in range(concurrency)))
    calls = count // concurrency * concurrency
    per_call = (cpu_seconds() - started) / calls * 1e6
    rate = calls / (time.perf_counter() - wall)
    print(f"  {name:<34} {per_call:7.0f} µs CPU per publish   ({rate:,.0f}/s)")
    return per_call


async def run(port: int, count: int, concurrency: int) -> None:
    import httpx
    from todo_shared.dapr import CLOUDEVENTS_JSON, DaprClient

    async with DaprClient(port) as dapr:

        async def via_client(event: dict) -> None:
            await dapr.publish(
                "pubsub", "task-events", event, partition_key="u", content_type=CLOUDEVENTS_JSON
            )

        ours = await measure("DaprClient.publish", via_client, count, concurrency)

    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:

        async def via_httpx(event: dict) -> None:
            response = await http.post(
                "/v1.0/publish/pubsub/task-events",
                params={"metadata.partitionKey": "u"},
                content=json.dumps(event).encode(),
                headers={"content-type": CLOUDEVENTS_JSON},
            )
            response.raise_for_status()

        reference = await measure("httpx.AsyncClient POST (reference)", via_httpx, count, concurrency)
    print(f"\n  DaprClient.publish / httpx: {ours / reference:.2f}x the CPU")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=5000, help="publishes measured per client")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent publishers")
    args = parser.parse_args()

    import uvloop

    print(f"bench/dapr_publish.py: {os.cpu_count()} CPUs, concurrency {args.concurrency}")
    sidecar, port = start_sidecar()
    try:
        uvloop.run(run(port, args.count, args.concurrency))
    finally:
        stop(sidecar)


if __name__ == "__main__":
    main()
