#!/usr/bin/env python3
"""Benchmark: the api's create and list throughput and latency, next to PostgreSQL's own
rate for the same writes, measured in the same run. Prints figures and ratios, never pass/fail.

What runs (all on this machine, loopback):
- a real PostgreSQL 15 (testkit.postgres), the schema from the api's migrations;
- the api as production runs it: `--replicas` (default 2, the chart's `api.replicas`) real
  `todo-api` processes, each one uvicorn process as in one pod (uvloop + httptools,
  production argon2 and log settings, JSON logs to a file), each with its outbox relay
  publishing every event (Dapr's bulk publish API) to a stand-in for the Dapr sidecar (a
  separate process, todo_shared.testing.DaprSidecarStandIn, so that the figures measure
  our processes rather than daprd and Kafka);
- a load client: asyncio + uvloop keep-alive HTTP/1.1 connections (a bare protocol, to take
  little of the shared CPU), a fixed number of them (closed loop), spread round-robin over the
  replicas as a Service would; each connection sends its requests for `--users-per-connection`
  signed-in users in turn (default 8: 64 users at concurrency 8; a user's requests never
  overlap). The count of users matters to the relay: it publishes one event per user per
  bulk call (a user's events stay in order), so 8 users each creating ~100 tasks a second
  (`--users-per-connection 1`, the figure of earlier runs) is its worst case;
- pgbench (Debian's postgresql-15) at the same concurrency, twice: first with the very
  statement the api sends for one task create (insert the task row, take the per-user
  advisory lock, insert the outbox row with a task snapshot of the same size, in one
  implicit transaction); then with the same writes as BEGIN, two INSERTs and COMMIT (four
  round trips): the issue's equivalent transaction, the reference the target is read against.

Two reference phases come first: the service floor (GET /healthz: uvicorn, FastAPI and the
shared middleware, no database) and GET /auth/me (token check + one query).

The create phase's CPU window closes only once the relays have published (and deleted) every
event of the phase, so the CPU per create includes relaying each event, also when the relays
were behind at the end of the load. The 1-minute load average is printed at the start and
end of the run: the machine may be shared, and rates suffer from other load more than the
ratios and the CPU figures.

Targets the figures are read against: create p99 < 50 ms at the measured rate; api create
throughput >= 30% of pgbench's rate for BEGIN, task INSERT, outbox INSERT, COMMIT.

Usage: python -m bench.api [--concurrency 8] [--users-per-connection 8] [--duration 10]
                           [--warmup 2] [--replicas 2] [--api-env NAME=VALUE ...]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

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

# One task create exactly as the api sends it (todo_api.store._CREATE_TASK_WITH_EVENT): one
# statement in its own implicit transaction inserting the task row, taking the per-user
# advisory lock and inserting the outbox row with a task snapshot of the same size. Ids and
# times come from the server here, from the api there.
PGBENCH_SAME_STATEMENT = """\
\\set n random(1, 1000000)
WITH new_task AS (
  INSERT INTO tasks (id, user_id, series_id, title, description, priority, tags, due_at,
                     remind_before_minutes, recurrence, created_at, updated_at)
  SELECT t.id, md5(:client_id::text)::uuid, t.id, 'bench task ' || :n, NULL, 'medium', '{{bench}}',
         NULL, NULL, 'none', now(), now()
  FROM (SELECT gen_random_uuid() AS id) t
  RETURNING id, created_at
), user_lock AS MATERIALIZED (
  SELECT pg_advisory_xact_lock(('x' || substr(md5(:client_id::text), 1, 16))::bit(64)::bigint)
)
INSERT INTO outbox_events (id, type, user_id, task_id, payload, created_at)
  SELECT gen_random_uuid(), 'task.created', md5(:client_id::text)::uuid, new_task.id,
         jsonb_build_object('event_id', gen_random_uuid(), 'type', 'task.created',
                            'user_id', md5(:client_id::text)::uuid, 'task_id', new_task.id::text,
                            'occurred_at', new_task.created_at::text, 'task', '{snapshot}'::jsonb),
         new_task.created_at
  FROM new_task, user_lock;
"""

# The same writes as a client without the one-statement trick would send them: BEGIN, the task
# row, the lock + outbox row, COMMIT (four round trips). The equivalent transaction:
# the reference the 30% target is read against.
PGBENCH_FOUR_ROUND_TRIPS = """\
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


class Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection; just enough protocol for JSON request/response.

    A bare asyncio protocol (no streams, no regular expressions per response), so the load
    client takes as little as it can of the CPU it shares with the api and PostgreSQL."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(lambda: cls(f"{host}:{port}"), host, port)
        return conn

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0 or self.waiter is None:
            return
        head = bytes(self.buffer[:end]).lower()
        length = 0
        at = head.find(b"\r\ncontent-length:")
        if at >= 0:
            stop = head.find(b"\r\n", at + 2)
            length = int(head[at + 17 : stop if stop > 0 else len(head)])
        if len(self.buffer) < end + 4 + length:
            return
        status = int(self.buffer[9:12])
        body = bytes(self.buffer[end + 4 : end + 4 + length])
        del self.buffer[: end + 4 + length]
        waiter, self.waiter = self.waiter, None
        waiter.set_result((status, body))

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc or ConnectionError("connection closed"))

    async def request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}", f"Content-Length: {len(body)}"]
        if body:
            lines.append("Content-Type: application/json")
        lines.extend(f"{k}: {v}" for k, v in (headers or {}).items())
        self.waiter = asyncio.get_running_loop().create_future()
        assert self.transport is not None
        self.transport.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        return await self.waiter

    async def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


@dataclass
class Phase:
    name: str
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    seconds: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)  # seconds of CPU per process group
    settled: str = ""  # what ``settle`` reported (the outbox drain, for creates)

    def cpu_line(self) -> str:
        """CPU per operation of each process group in the measured window, and the sum."""
        count = len(self.latencies) + self.errors
        if not self.cpu or not count:
            return f"{self.name}: no CPU figures"
        parts = ", ".join(f"{name} {seconds / count * 1e6:,.0f} µs" for name, seconds in self.cpu.items())
        return f"{self.name}: {parts}: {self.cpu_per_op:,.0f} µs"

    @property
    def cpu_per_op(self) -> float:
        count = len(self.latencies) + self.errors
        return sum(self.cpu.values()) / count * 1e6 if count else float("nan")

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
    name: str,
    targets: list[tuple[str, int]],
    tokens: list[list[str]],
    make,
    duration: float,
    warmup: float,
    meter: CpuMeter | None = None,
    settle=None,
) -> Phase:
    """Each list of tokens gets one connection (round-robin over the api replicas) looping for
    warmup + duration, its requests taking the tokens in turn.
    With a ``meter``, the CPU each process group used in the measured window goes to ``phase.cpu``;
    with ``settle`` (an async callable), the window closes only once it has returned after the load."""
    phase = Phase(name)
    start = time.perf_counter()
    measure_from = start + warmup
    stop_at = measure_from + duration

    async def metered() -> None:
        await asyncio.sleep(measure_from - time.perf_counter())
        before = meter.read()
        await asyncio.sleep(stop_at - time.perf_counter())
        if settle is not None:
            phase.settled = await settle()
        phase.cpu = meter.since(before)

    async def worker(i: int, users: list[str]) -> None:
        conn = await Connection.open(*targets[i % len(targets)])
        headers = [{"Authorization": f"Bearer {token}"} for token in users]
        n = 0
        try:
            while True:
                now = time.perf_counter()
                if now >= stop_at:
                    return
                method, path, body = make(i, n)
                n += 1
                status, _ = await conn.request(method, path, body, headers[n % len(headers)])
                done = time.perf_counter()
                if now >= measure_from:
                    if 200 <= status < 300:
                        phase.latencies.append(done - now)
                    else:
                        phase.errors += 1
        finally:
            await conn.close()

    extra = [metered()] if meter is not None else []
    await asyncio.gather(*(worker(i, users) for i, users in enumerate(tokens)), *extra)
    phase.seconds = duration
    return phase


# -- CPU accounting -----------------------------------------------------------------------------------

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int, *, descendants: bool = False) -> float:
    """CPU seconds (user + system) of a process; with ``descendants``, plus its live descendants
    and the children it has reaped (PostgreSQL backends that came and went)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    ticks = int(fields[11]) + int(fields[12])
    total = ticks / CLOCK_TICKS
    if descendants:
        total += (int(fields[13]) + int(fields[14])) / CLOCK_TICKS
        with contextlib.suppress(FileNotFoundError):
            for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
                total += process_cpu(int(child), descendants=True)
    return total


class CpuMeter:
    """CPU used by named process groups between two readings: the api processes, PostgreSQL
    (postmaster and backends), the sidecar stand-in, and this process (the load client)."""

    def __init__(self, groups: dict[str, list[int]], postgres_pid: int | None = None) -> None:
        self.groups = groups
        self.postgres_pid = postgres_pid

    def read(self) -> dict[str, float]:
        reading = {name: sum(process_cpu(pid) for pid in pids) for name, pids in self.groups.items()}
        if self.postgres_pid is not None:
            reading["postgres"] = process_cpu(self.postgres_pid, descendants=True)
        times = os.times()
        reading["load client"] = times.user + times.system
        return reading

    def since(self, before: dict[str, float]) -> dict[str, float]:
        now = self.read()
        return {name: now[name] - before[name] for name in now}


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


def start_api(
    dsn: str, sidecar_port: int, log_dir: Path, index: int, extra_env: dict[str, str]
) -> tuple[subprocess.Popen, int]:
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
            **extra_env,
        }
    )
    log = (log_dir / f"api-{index}.log").open("w")
    command = [sys.executable, "-c", "from todo_api.main import run; run()"]
    proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    return proc, port


def wait_ready(port: int, proc: subprocess.Popen, timeout: float = 180) -> None:
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


def run_pgbench(
    pg, database: str, name: str, script_text: str, concurrency: int, duration: float, workdir: Path
) -> Phase:
    from testkit.postgres import pg_bin

    slug = re.sub(r"\W+", "-", name)
    script = workdir / f"{slug}.sql"
    script.write_text(script_text.format(snapshot=json.dumps(SNAPSHOT)))
    logs = workdir / f"{slug}-log"
    logs.mkdir()
    command = [
        pg_bin("pgbench"),
        "-n",
        "-h",
        "127.0.0.1",
        "-p",
        str(pg.port),
        "-U",
        pg.user,
        "-c",
        str(concurrency),
        "-j",
        str(min(concurrency, os.cpu_count() or 1)),
        "-T",
        str(int(duration)),
        "-M",
        "prepared",
        "-f",
        str(script),
        "-l",
        "--log-prefix",
        str(logs / "tx"),
        database,
    ]
    postgres_before = process_cpu(pg.process.pid, descendants=True)
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    phase = Phase(name)
    phase.cpu = {
        "postgres": process_cpu(pg.process.pid, descendants=True) - postgres_before,
        "pgbench": children_after.ru_utime
        + children_after.ru_stime
        - children_before.ru_utime
        - children_before.ru_stime,
    }
    for log in logs.iterdir():
        for line in log.read_text().splitlines():
            parts = line.split()
            phase.latencies.append(int(parts[2]) / 1_000_000)
    tps = re.search(r"tps = ([\d.]+) \(without initial connection time\)", done.stdout)
    phase.seconds = len(phase.latencies) / float(tps.group(1)) if tps else duration
    return phase


# -- main ------------------------------------------------------------------------------------------


async def sign_in(ports: list[int], count: int) -> list[str]:
    """Register and sign in ``count`` users, 8 at a time over the replicas; their tokens, in order."""

    async def one_by_one(port: int, indexes: range) -> list[str]:
        tokens = []
        conn = await Connection.open("127.0.0.1", port)
        try:
            for i in indexes:
                credentials = json.dumps({"email": f"bench{i}@example.com", "password": PASSWORD}).encode()
                status, _ = await conn.request("POST", "/api/v1/auth/register", credentials)
                assert status == 201, status
                status, body = await conn.request("POST", "/api/v1/auth/login", credentials)
                assert status == 200, status
                tokens.append(json.loads(body)["access_token"])
        finally:
            await conn.close()
        return tokens

    lanes = await asyncio.gather(
        *(one_by_one(ports[lane % len(ports)], range(lane, count, 8)) for lane in range(min(8, count)))
    )
    return [lanes[i % 8][i // 8] for i in range(count)]


def create_request(i: int, n: int) -> tuple[str, str, bytes]:
    body = json.dumps({"title": f"bench task {n:06d}", "priority": "medium", "tags": ["bench"]})
    return "POST", "/api/v1/tasks", body.encode()


def floor_request(i: int, n: int) -> tuple[str, str, bytes]:
    return "GET", "/healthz", b""


def me_request(i: int, n: int) -> tuple[str, str, bytes]:
    return "GET", "/api/v1/auth/me", b""


def list_request(i: int, n: int) -> tuple[str, str, bytes]:
    return "GET", "/api/v1/tasks?limit=20&status=open&sort=created", b""


async def outbox_pending(conn) -> int:
    """Events not yet published (the relay deletes each event once the sidecar accepted it)."""
    return await conn.fetchval("SELECT count(*) FROM outbox_events WHERE published_at IS NULL")


def outbox_drain(dsn: str, timeout: float = 120.0):
    """``settle`` for the create phase: wait until the relays have published every event."""

    async def settle() -> str:
        import asyncpg

        conn = await asyncpg.connect(dsn)
        try:
            ended = time.perf_counter()
            backlog = await outbox_pending(conn)
            while (pending := await outbox_pending(conn)) and time.perf_counter() - ended < timeout:
                await asyncio.sleep(0.02)
            took = time.perf_counter() - ended
            state = "drained" if not pending else f"NOT drained, {pending} still pending"
            return f"{backlog} events pending when the load stopped, {state} {took:.2f} s later"
        finally:
            await conn.close()

    return settle


async def outbox_table_stats(dsn: str) -> str:
    """Row operations on the outbox and autovacuum runs since the database was made."""
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(
            "SELECT n_tup_ins, n_tup_upd, n_tup_del, n_dead_tup, autovacuum_count "
            "FROM pg_stat_user_tables WHERE relname = 'outbox_events'"
        )
        pending = await outbox_pending(conn)
    finally:
        await conn.close()
    return (
        f"{row['n_tup_ins']} inserted, {row['n_tup_upd']} updated, {row['n_tup_del']} deleted, "
        f"{row['n_dead_tup']} dead tuples now, {row['autovacuum_count']} autovacuum runs; {pending} pending"
    )


def load_average() -> str:
    return Path("/proc/loadavg").read_text().split()[0]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--concurrency", type=int, default=8, help="connections (closed loop), also pgbench -c"
    )
    parser.add_argument(
        "--users-per-connection",
        type=int,
        default=8,
        help="signed-in users each connection sends requests for, in turn (1: the relay's worst case)",
    )
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured per phase")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before measuring")
    parser.add_argument(
        "--replicas",
        type=int,
        default=2,
        help="api processes, one per pod as in production (the chart runs 2); the client spreads connections",
    )
    parser.add_argument(
        "--api-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting for the api processes, e.g. TODO_OUTBOX_COALESCE_SECONDS=0.05 (repeatable); "
        "with TODO_OUTBOX_RELAY_ENABLED=false the create phase does not wait for the outbox",
    )
    args = parser.parse_args()
    if bad := [item for item in args.api_env if "=" not in item]:
        parser.error(f"--api-env takes NAME=VALUE, not {bad[0]!r}")
    extra_env = dict(item.split("=", 1) for item in args.api_env)
    relay_on = extra_env.get("TODO_OUTBOX_RELAY_ENABLED", "true").lower() != "false"

    sys.path.insert(0, str(ROOT))
    import uvloop
    from todo_api import migrate

    from testkit.postgres import Postgres

    print(
        f"bench/api.py: {os.cpu_count()} CPUs, concurrency {args.concurrency}, "
        f"{args.users_per_connection} user(s) per connection, {args.replicas} api process(es); "
        f"1-minute load average at the start: {load_average()}"
        + (f"; api settings: {extra_env}" if extra_env else "")
    )
    with Postgres.create() as pg, tempfile.TemporaryDirectory(prefix="todo-bench-") as tmp:
        workdir = Path(tmp)
        api_dsn = pg.create_database("bench_api")
        migrate.upgrade(api_dsn)
        raw_dsn = pg.create_database("bench_pgbench")
        migrate.upgrade(raw_dsn)

        sidecar, sidecar_port = start_sidecar()
        apis = [start_api(api_dsn, sidecar_port, workdir, i, extra_env) for i in range(args.replicas)]
        try:
            for proc, port in apis:
                wait_ready(port, proc)
            targets = [("127.0.0.1", port) for _, port in apis]

            async def api_phases() -> tuple[Phase, ...]:
                signed_in = await sign_in(
                    [port for _, port in apis], args.concurrency * args.users_per_connection
                )
                tokens = [signed_in[i :: args.concurrency] for i in range(args.concurrency)]
                meter = CpuMeter(
                    {"api": [proc.pid for proc, _ in apis], "sidecar stand-in": [sidecar.pid]}, pg.process.pid
                )
                floor = await run_phase(
                    "api floor (GET /healthz)", targets, tokens, floor_request, 3, 1, meter
                )
                me = await run_phase("api auth + 1 query (me)", targets, tokens, me_request, 3, 1, meter)
                create = await run_phase(
                    "api create (POST)",
                    targets,
                    tokens,
                    create_request,
                    args.duration,
                    args.warmup,
                    meter,
                    settle=outbox_drain(api_dsn) if relay_on else None,
                )
                listing = await run_phase(
                    "api list (GET, 20)", targets, tokens, list_request, args.duration, args.warmup, meter
                )
                return floor, me, create, listing

            floor, me, create, listing = uvloop.run(api_phases())
            outbox_stats = asyncio.run(outbox_table_stats(api_dsn))
        finally:
            for proc, _ in apis:
                stop(proc)
            stop(sidecar)
        asyncio.run(add_pgbench_users(pg.dsn("bench_pgbench"), args.concurrency))
        raw = run_pgbench(
            pg,
            "bench_pgbench",
            "pgbench same statement",
            PGBENCH_SAME_STATEMENT,
            args.concurrency,
            args.duration,
            workdir,
        )
        four = run_pgbench(
            pg,
            "bench_pgbench",
            "pgbench BEGIN..COMMIT",
            PGBENCH_FOUR_ROUND_TRIPS,
            args.concurrency,
            args.duration,
            workdir,
        )

    print()
    for phase in (floor, me, create, listing, raw, four):
        print("  " + phase.line())
    print()
    ratio = create.rate / raw.rate if raw.rate else float("nan")
    print(f"  api create rate / pgbench rate, same statement: {ratio:.1%}")
    ratio_four = create.rate / four.rate if four.rate else float("nan")
    print(f"  api create rate / pgbench rate, BEGIN + 2 INSERTs + COMMIT: {ratio_four:.1%}   (target >= 30%)")
    print(f"  api create p99 at {create.rate:.0f}/s: {create.pct(99):.1f} ms   (target < 50 ms)")
    print(f"  api list p99 at {listing.rate:.0f}/s: {listing.pct(99):.1f} ms")
    print(f"  outbox, create phase: {create.settled}")
    print(f"  outbox table after the run: {outbox_stats}")
    print()
    print("  CPU per operation, all processes on the machine (robust to other load; the throughput")
    print("  ratio tends to the CPU ratio on an otherwise idle machine, both sides being CPU-bound):")
    for phase in (floor, me, create, listing, raw, four):
        print(f"    {phase.cpu_line()}")
    cpu_ratio = raw.cpu_per_op / create.cpu_per_op if create.cpu else float("nan")
    print(f"  CPU ratio, pgbench same statement / api create: {cpu_ratio:.1%}")
    cpu_ratio_four = four.cpu_per_op / create.cpu_per_op if create.cpu else float("nan")
    print(f"  CPU ratio, pgbench BEGIN..COMMIT / api create: {cpu_ratio_four:.1%}")
    print(
        f"  mean latency: api create {statistics.fmean(create.latencies) * 1000:.1f} ms, "
        f"pgbench {statistics.fmean(raw.latencies) * 1000:.1f} ms"
    )
    print(f"  1-minute load average at the end: {load_average()}")


if __name__ == "__main__":
    main()
