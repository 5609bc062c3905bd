#!/usr/bin/env python3
"""Benchmark: the api's create and list throughput and latency, next to PostgreSQL's own
rate for the same writes, measured in the same run. Prints figures and ratios, never pass/fail.

What runs (all on this machine, loopback):
- a real PostgreSQL 15 (testkit.postgres), the schema from the api's migrations;
- the api as its real `todo-api` process(es) (uvicorn, production argon2 and log settings),
  its outbox relay publishing every event to a stand-in for the Dapr sidecar (a separate
  process; daprd is not on this machine yet);
- a load client: asyncio + uvloop keep-alive HTTP/1.1 connections, a fixed number of them
  (closed loop), one signed-in user per connection;
- pgbench (Debian's postgresql-15) at the same concurrency, with a script doing the same
  transaction as one task create: insert the task row, take the per-user advisory lock,
  insert the outbox row with a task snapshot of the same size.

Two reference phases come first: the service floor (GET /healthz: uvicorn, FastAPI and the
shared middleware, no database) and GET /auth/me (token check + one query).

Targets the figures are read against: create p99 < 50 ms at the measured rate; api create
throughput >= 30% of pgbench's rate for the same writes.

Usage: python bench/api.py [--concurrency 8] [--duration 10] [--warmup 2] [--replicas 1]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = uuid.uuid4().hex
SNAPSHOT = {
    "id": "00000000-0000-0000-0000-000000000000",
    "title": "bench task 000000",
    "description": None,
    "priority": "medium",
    "tags": ["bench"],
    "due_at": None,
    "remind_before_minutes": None,
    "recurrence": "none",
    "completed": False,
    "completed_at": None,
    "created_at": "2025-01-01T00:00:00.000000Z",
    "updated_at": "2025-01-01T00:00:00.000000Z",
    "series_id": "00000000-0000-0000-0000-000000000000",
    "next_task_id": None,
}

# One task create, as the api does it (store.create_task + outbox.record_event).
PGBENCH_SCRIPT = """\
\\set n random(1, 1000000)
BEGIN;
INSERT INTO tasks (id, user_id, title, priority, tags, series_id)
  SELECT t.id, md5(:client_id::text)::uuid, 'bench task ' || :n, 'medium', '{{bench}}', t.id
  FROM (SELECT gen_random_uuid() AS id) t
  RETURNING id AS task_id, created_at \\gset
WITH user_lock AS MATERIALIZED (
  SELECT pg_advisory_xact_lock(('x' || substr(md5(:client_id::text), 1, 16))::bit(64)::bigint))
INSERT INTO outbox_events (id, type, user_id, task_id, payload)
  SELECT gen_random_uuid(), 'task.created', md5(:client_id::text)::uuid, CAST(:task_id AS uuid),
         jsonb_build_object('event_id', gen_random_uuid(), 'type', 'task.created',
                            'user_id', md5(:client_id::text)::uuid, 'task_id', CAST(:task_id AS text),
                            'occurred_at', CAST(:created_at AS text), 'task', '{snapshot}'::jsonb)
  FROM user_lock;
COMMIT;
"""


# -- the load client -----------------------------------------------------------------------------


class Connection:
    """One keep-alive HTTP/1.1 connection; just enough protocol for JSON request/response."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str) -> None:
        self.reader, self.writer, self.host = reader, writer, host

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer, f"{host}:{port}")

    async def request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}", f"Content-Length: {len(body)}"]
        if body:
            lines.append("Content-Type: application/json")
        lines.extend(f"{k}: {v}" for k, v in (headers or {}).items())
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        match = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
        length = int(match.group(1)) if match else 0
        payload = await self.reader.readexactly(length) if length else b""
        return status, payload

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()


@dataclass
class Phase:
    name: str
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0

    def pct(self, p: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1000

    def line(self) -> str:
        return (
            f"{self.name:<24} {len(self.latencies):>7} ok {self.errors:>4} errors  {self.rate:>8.1f} /s"
            f"   p50 {self.pct(50):6.1f} ms   p99 {self.pct(99):6.1f} ms"
        )


async def run_phase(
    name: str, targets: list[tuple[str, int]], tokens: list[str], make, duration: float, warmup: float
) -> Phase:
    """Each token gets one connection (round-robin over the api replicas) looping for warmup + duration."""
    phase = Phase(name)
    start = time.perf_counter()
    measure_from = start + warmup
    stop_at = measure_from + duration

    async def worker(i: int, token: str) -> None:
        conn = await Connection.open(*targets[i % len(targets)])
        headers = {"Authorization": f"Bearer {token}"}
        n = 0
        try:
            while True:
                now = time.perf_counter()
                if now >= stop_at:
                    return
                method, path, body = make(i, n)
                n += 1
                status, _ = await conn.request(method, path, body, headers)
                done = time.perf_counter()
                if now >= measure_from:
                    if 200 <= status < 300:
                        phase.latencies.append(done - now)
                    else:
                        phase.errors += 1
        finally:
            await conn.close()

    await asyncio.gather(*(worker(i, t) for i, t in enumerate(tokens)))
    phase.seconds = duration
    return phase


# -- processes -------------------------------------------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TODO_", "DAPR_", "APP_API"))}
    env["PYTHONPATH"] = str(ROOT)
    return env


def start_sidecar() -> tuple[subprocess.Popen, int]:
    code = (
        "import signal\n"
        "from todo_shared.testing import DaprSidecarStandIn\n"
        "s = DaprSidecarStandIn().start()\n"
        "print(s.port, flush=True)\n"
        "signal.sigwait({signal.SIGTERM, signal.SIGINT})\n"
        "s.stop()\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], env=base_env(), stdout=subprocess.PIPE, text=True)
    return proc, int(proc.stdout.readline())


def start_api(dsn: str, sidecar_port: int, log_dir: Path, index: int) -> tuple[subprocess.Popen, int]:
    port = free_port()
    env = base_env()
    env.update(
        {
            "TODO_ENVIRONMENT": "local",
            "TODO_HOST": "127.0.0.1",
            "TODO_PORT": str(port),
            "TODO_DATABASE_URL": dsn,
            "TODO_DB_POOL_SIZE": "10",
            "DAPR_HTTP_PORT": str(sidecar_port),
        }
    )
    log = (log_dir / f"api-{index}.log").open("w")
    command = [sys.executable, "-c", "from todo_api.main import run; run()"]
    proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    return proc, port


def wait_ready(port: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"api exited with {proc.returncode}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return
        time.sleep(0.1)
    raise TimeoutError("api not ready")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- pgbench ---------------------------------------------------------------------------------------


async def add_pgbench_users(dsn: str, count: int) -> None:
    """Users whose ids the script derives from pgbench's client id (0..count-1)."""
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "INSERT INTO users (id, email, password_hash) "
            "SELECT md5(g::text)::uuid, 'pgbench' || g || '@example.com', 'x' "
            "FROM generate_series(0, $1 - 1) g",
            count,
        )
    finally:
        await conn.close()


def run_pgbench(pg, database: str, concurrency: int, duration: float, workdir: Path) -> Phase:
    from testkit.postgres import pg_bin

    asyncio.run(add_pgbench_users(pg.dsn(database), concurrency))
    script = workdir / "create_task.sql"
    script.write_text(PGBENCH_SCRIPT.format(snapshot=json.dumps(SNAPSHOT)))
    logs = workdir / "pgbench-log"
    logs.mkdir()
    command = [
        pg_bin("pgbench"), "-n", "-h", "127.0.0.1", "-p", str(pg.port), "-U", pg.user,
        "-c", str(concurrency), "-j", str(min(concurrency, os.cpu_count() or 1)),
        "-T", str(int(duration)), "-M", "prepared", "-f", str(script),
        "-l", "--log-prefix", str(logs / "tx"), database,
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    phase = Phase("pgbench same writes")
    for log in logs.iterdir():
        for line in log.read_text().splitlines():
            parts = line.split()
            phase.latencies.append(int(parts[2]) / 1_000_000)
    tps = re.search(r"tps = ([\d.]+) \(without initial connection time\)", done.stdout)
    phase.seconds = len(phase.latencies) / float(tps.group(1)) if tps else duration
    return phase


# -- main ------------------------------------------------------------------------------------------


async def sign_in(port: int, count: int) -> list[str]:
    tokens = []
    conn = await Connection.open("127.0.0.1", port)
    try:
        for i in range(count):
            credentials = json.dumps({"email": f"bench{i}@example.com", "password": PASSWORD}).encode()
            status, _ = await conn.request("POST", "/api/v1/auth/register", credentials)
            assert status == 201, status
            status, body = await conn.request("POST", "/api/v1/auth/login", credentials)
            assert status == 200, status
            tokens.append(json.loads(body)["access_token"])
    finally:
        await conn.close()
    return tokens


def create_request(i: int, n: int) -> tuple[str, str, bytes]:
    body = json.dumps({"title": f"bench task {n:06d}", "priority": "medium", "tags": ["bench"]})
    return "POST", "/api/v1/tasks", body.encode()


def floor_request(i: int, n: int) -> tuple[str, str, bytes]:
    return "GET", "/healthz", b""


def me_request(i: int, n: int) -> tuple[str, str, bytes]:
    return "GET", "/api/v1/auth/me", b""


def list_request(i: int, n: int) -> tuple[str, str, bytes]:
    return "GET", "/api/v1/tasks?limit=20&status=open&sort=created", b""


async def outbox_backlog(dsn: str) -> tuple[int, int]:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(
            "SELECT count(*) FILTER (WHERE published_at IS NULL) AS pending, count(*) AS total "
            "FROM outbox_events"
        )
        return row["pending"], row["total"]
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--concurrency", type=int, default=8, help="connections (closed loop), also pgbench -c"
    )
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured per phase")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before measuring")
    parser.add_argument(
        "--replicas", type=int, default=1, help="api processes (the client spreads connections)"
    )
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT))
    import uvloop
    from todo_api import migrate

    from testkit.postgres import Postgres

    print(
        f"bench/api.py: {os.cpu_count()} CPUs, concurrency {args.concurrency}, "
        f"{args.replicas} api process(es)"
    )
    with Postgres.create() as pg, tempfile.TemporaryDirectory(prefix="todo-bench-") as tmp:
        workdir = Path(tmp)
        api_dsn = pg.create_database("bench_api")
        migrate.upgrade(api_dsn)
        raw_dsn = pg.create_database("bench_pgbench")
        migrate.upgrade(raw_dsn)

        sidecar, sidecar_port = start_sidecar()
        apis = [start_api(api_dsn, sidecar_port, workdir, i) for i in range(args.replicas)]
        try:
            for proc, port in apis:
                wait_ready(port, proc)
            targets = [("127.0.0.1", port) for _, port in apis]

            async def api_phases() -> tuple[Phase, ...]:
                tokens = await sign_in(apis[0][1], args.concurrency)
                floor = await run_phase("api floor (GET /healthz)", targets, tokens, floor_request, 3, 1)
                me = await run_phase("api auth + 1 query (me)", targets, tokens, me_request, 3, 1)
                create = await run_phase(
                    "api create (POST)", targets, tokens, create_request, args.duration, args.warmup
                )
                listing = await run_phase(
                    "api list (GET, 20)", targets, tokens, list_request, args.duration, args.warmup
                )
                return floor, me, create, listing

            floor, me, create, listing = uvloop.run(api_phases())
            time.sleep(1.0)
            pending, total = asyncio.run(outbox_backlog(api_dsn))
        finally:
            for proc, _ in apis:
                stop(proc)
            stop(sidecar)
        raw = run_pgbench(pg, "bench_pgbench", args.concurrency, args.duration, workdir)

    print()
    for phase in (floor, me, create, listing, raw):
        print("  " + phase.line())
    print()
    ratio = create.rate / raw.rate if raw.rate else float("nan")
    print(f"  api create rate / pgbench rate for the same writes: {ratio:.1%}   (target >= 30%)")
    print(f"  api create p99 at {create.rate:.0f}/s: {create.pct(99):.1f} ms   (target < 50 ms)")
    print(f"  api list p99 at {listing.rate:.0f}/s: {listing.pct(99):.1f} ms")
    print(
        f"  outbox after the run: {total} events, {pending} not yet published (relay kept up: {pending == 0})"
    )
    print(f"  mean latency: api create {statistics.fmean(create.latencies) * 1000:.1f} ms, "
          f"pgbench {statistics.fmean(raw.latencies) * 1000:.1f} ms")  # fmt: skip


if __name__ == "__main__":
    main()
