#!/usr/bin/env python3
"""Benchmark: what relaying one outbox event costs, by how many events a relay round carries,
and what marking published rows (then deleting them a day later) cost PostgreSQL next to
deleting them at once. Prints figures, never pass/fail.

What runs (this machine, loopback): a real PostgreSQL 15 (testkit.postgres) with the api's
schema, the sidecar stand-in (todo_shared.testing.DaprSidecarStandIn, its own process, as in
bench/api.py) and, in this process, the api's outbox relay (todo_shared.outbox.OutboxRelay on
the api's engine settings).

1. Relay rounds: ``--rounds`` times, write ``users x per-user`` events, then time one
   ``run_once`` (claim, bulk publish in per-user layers, delete, commit). CPU per event of
   the relay (this process), PostgreSQL (postmaster and backends) and the stand-in.
2. Published rows: ``--events`` events, relayed in rounds of 8; PostgreSQL CPU per event
   for ``UPDATE .. SET published_at`` (what the relay did before) plus the later retention
   clean-up and VACUUM, against ``DELETE`` plus VACUUM.

Usage: python -m bench.outbox_relay [--rounds 300] [--events 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import uuid
from pathlib import Path

from bench.api import SNAPSHOT, process_cpu, start_sidecar, stop

ROOT = Path(__file__).resolve().parent.parent
SHAPES = ((1, 1), (2, 1), (4, 1), (8, 1), (8, 4), (20, 2))


def payload() -> str:
    return json.dumps({"event_id": str(uuid.uuid4()), "type": "task.created", "task": SNAPSHOT})


async def relay_rounds(pg, dsn: str, sidecar, port: int, users: int, per_user: int, rounds: int) -> None:
    import asyncpg
    from prometheus_client import CollectorRegistry
    from todo_api.db import create_engine
    from todo_api.outbox import relay_config
    from todo_api.settings import ApiSettings
    from todo_shared.dapr import DaprClient
    from todo_shared.outbox import OutboxMetrics, OutboxRelay

    settings = ApiSettings(environment="test", database_url=dsn, outbox_users_per_round=max(20, users))
    engine = create_engine(settings)
    dapr = DaprClient(port)
    relay = OutboxRelay(engine, dapr, relay_config(settings), OutboxMetrics(CollectorRegistry()))
    conn = await asyncpg.connect(dsn)
    user_ids = [uuid.uuid4() for _ in range(users)]
    body = payload()

    async def write() -> None:
        await conn.execute(
            "INSERT INTO outbox_events (id, type, user_id, task_id, payload) "
            "SELECT gen_random_uuid(), 'task.created', u, gen_random_uuid(), $2::jsonb "
            "FROM unnest($1::uuid[]) u, generate_series(1, $3)",
            user_ids,
            body,
            per_user,
        )

    def cpu() -> tuple[float, float, float]:
        times = os.times()
        return (
            times.user + times.system,
            process_cpu(pg.process.pid, descendants=True),
            process_cpu(sidecar.pid),
        )

    try:
        await write()
        await relay.run_once()  # warm-up: connections, prepared statements
        spent, events, calls = [0.0, 0.0, 0.0], 0, 0
        for _ in range(rounds):
            await write()
            before = cpu()
            result = await relay.run_once()
            after = cpu()
            assert result.published == users * per_user and not result.failed, result
            events += result.published
            calls += result.bulk_calls
            spent = [total + b - a for total, a, b in zip(spent, before, after, strict=True)]
    finally:
        await conn.close()
        await dapr.aclose()
        await engine.dispose()
    relay_us, pg_us, sidecar_us = (seconds / events * 1e6 for seconds in spent)
    print(
        f"  {users:>2} users x {per_user} ({users * per_user:>2} events,"
        f" {calls // rounds} bulk calls) a round:"
        f" relay {relay_us:5.0f} µs, postgres {pg_us:4.0f} µs, stand-in {sidecar_us:4.0f} µs:"
        f" {relay_us + pg_us + sidecar_us:5.0f} µs per event"
    )


async def published_rows(pg, dsn: str, mode: str, count: int, batch: int = 8) -> None:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "INSERT INTO outbox_events (id, type, user_id, task_id, payload) "
            "SELECT gen_random_uuid(), 'task.created', md5((g % 8)::text)::uuid, gen_random_uuid(),"
            " $1::jsonb FROM generate_series(1, $2) g",
            payload(),
            count,
        )
        await conn.execute("VACUUM ANALYZE outbox_events")
        seqs = [row[0] for row in await conn.fetch("SELECT seq FROM outbox_events ORDER BY seq")]
        started = process_cpu(pg.process.pid, descendants=True)
        for i in range(0, count, batch):
            if mode == "mark":
                await conn.execute(
                    "UPDATE outbox_events SET published_at = now() WHERE seq = ANY($1::bigint[])",
                    seqs[i : i + batch],
                )
            else:
                await conn.execute(
                    "DELETE FROM outbox_events WHERE seq = ANY($1::bigint[])", seqs[i : i + batch]
                )
        relayed = process_cpu(pg.process.pid, descendants=True)
        if mode == "mark":  # the retention clean-up of the earlier relay, in its batches
            deleted = ""
            while deleted != "DELETE 0":
                deleted = await conn.execute(
                    "DELETE FROM outbox_events WHERE seq IN (SELECT seq FROM outbox_events "
                    "WHERE published_at IS NOT NULL LIMIT 10000)"
                )
        cleaned = process_cpu(pg.process.pid, descendants=True)
        await conn.execute("VACUUM outbox_events")
        vacuumed = process_cpu(pg.process.pid, descendants=True)
    finally:
        await conn.close()

    def per_event(a: float, b: float) -> float:
        return (b - a) / count * 1e6

    what = "mark published, delete later" if mode == "mark" else "delete at once"
    print(
        f"  {what:<29} relay statements {per_event(started, relayed):5.1f} µs, clean-up"
        f" {per_event(relayed, cleaned):4.1f} µs, VACUUM {per_event(cleaned, vacuumed):4.1f} µs:"
        f" {per_event(started, vacuumed):5.1f} µs of PostgreSQL CPU per event"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=300, help="relay rounds measured per shape")
    parser.add_argument("--events", type=int, default=20000, help="events for the published-rows part")
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT))
    import uvloop
    from todo_api import migrate

    from testkit.postgres import Postgres

    load = Path("/proc/loadavg").read_text().split()[0]
    print(f"bench/outbox_relay.py: {os.cpu_count()} CPUs; 1-minute load average at the start: {load}")
    with Postgres.create() as pg:
        print("\n1. relay CPU per event by the events one round carries (api relay, bulk publish)")
        sidecar, port = start_sidecar()
        try:
            for users, per_user in SHAPES:
                dsn = pg.create_database(f"relay_{users}_{per_user}")
                migrate.upgrade(dsn)
                uvloop.run(relay_rounds(pg, dsn, sidecar, port, users, per_user, args.rounds))
        finally:
            stop(sidecar)
        print("\n2. published rows: PostgreSQL CPU per event (statements in rounds of 8, then VACUUM)")
        for mode in ("mark", "delete"):
            dsn = pg.create_database(f"rows_{mode}")
            migrate.upgrade(dsn)
            asyncio.run(published_rows(pg, dsn, mode, args.events))
    load = Path("/proc/loadavg").read_text().split()[0]
    print(f"\n1-minute load average at the end: {load}")


if __name__ == "__main__":
    main()
