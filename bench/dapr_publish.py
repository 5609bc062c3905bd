#!/usr/bin/env python3
"""Benchmark: CPU per published event of ``todo_shared.dapr.DaprClient`` (the outbox relay's
hot path): one ``publish`` call per event, and ``publish_bulk`` (Dapr's bulk publish API, what
the relay uses) with 1, 8 and 32 events per call; next to a plain ``httpx.AsyncClient`` POST
of the single-event request, measured in the same run. Prints figures and ratios, never
pass/fail.

What runs (this machine, loopback): the stand-in for the Dapr sidecar
(``todo_shared.testing.DaprSidecarStandIn``) in its own process, as bench/api.py runs it; this
process publishes CloudEvents of the size the api's relay sends (a task snapshot), from
``--concurrency`` tasks in a closed loop. CPU is this process's user + system time (the
sidecar's is not counted), divided by the number of events published.

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


async def measure(name: str, publish, count: int, concurrency: int, per_call: int = 1) -> float:
    """CPU µs per event of ``await publish(event)`` (``per_call`` events a call), after a warm-up."""
    event = envelope()

    async def worker(n: int) -> None:
        for _ in range(n):
            await publish(event)

    await asyncio.gather(*(worker(50) for _ in range(concurrency)))  # warm-up, connections open
    calls_each = max(1, count // concurrency // per_call)
    started, wall = cpu_seconds(), time.perf_counter()
    await asyncio.gather(*(worker(calls_each) for _ in range(concurrency)))
    events = calls_each * concurrency * per_call
    per_event = (cpu_seconds() - started) / events * 1e6
    rate = events / (time.perf_counter() - wall)
    print(f"  {name:<40} {per_event:7.0f} µs CPU per event   ({rate:,.0f} events/s)")
    return per_event


async def run(port: int, count: int, concurrency: int) -> None:
    import httpx
    from todo_shared.dapr import CLOUDEVENTS_JSON, BulkEntry, DaprClient

    async with DaprClient(port) as dapr:

        async def via_client(event: dict) -> None:
            await dapr.publish(
                "pubsub", "task-events", event, partition_key="u", content_type=CLOUDEVENTS_JSON
            )

        ours = await measure("DaprClient.publish", via_client, count, concurrency)
        for size in (1, 8, 32):

            async def via_bulk(event: dict, size: int = size) -> None:
                entries = [
                    BulkEntry(f"{event['id']}-{i}", event, CLOUDEVENTS_JSON, {"partitionKey": f"u{i}"})
                    for i in range(size)
                ]
                failed = await dapr.publish_bulk("pubsub", "task-events", entries)
                assert not failed, failed

            bulk = await measure(
                f"DaprClient.publish_bulk, {size} a call", via_bulk, count, concurrency, per_call=size
            )
            print(f"    ({bulk / ours:.2f}x the CPU of one publish per event)")

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
    print("  (the sidecar stand-in's own CPU is not counted: see bench/api.py for all processes)")


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
