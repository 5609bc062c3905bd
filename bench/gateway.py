#!/usr/bin/env python3
"""Benchmark: how many concurrent SSE streams ONE gateway process holds, and how fast it fans
events out while holding them; optionally, api commit -> SSE receipt through real Dapr + Kafka.
Prints figures measured in this run, never pass/fail.

Capacity (always):
- the gateway as its real `todo-gateway` process (uvicorn + uvloop + httptools, production
  log settings, its own /metrics), fd limit raised with resource.setrlimit;
- a client process (asyncio + uvloop, raw sockets, HTTP/1.1 chunked + SSE parsing) opening
  streams in steps (one signed-in user per stream) until the gateway's RSS passes 256 MiB,
  fan-out p99 passes 1 s, or --max-connections;
- deliveries POSTed to the gateway's subscription route exactly as daprd delivers them (a
  CloudEvent with the api's outbox payload, ~0.7 KB), over keep-alive connections from this
  process: a steady phase (--rate events/s to random connected users, like real traffic) and
  a burst (one event for every connected user, back to back, 8 deliveries in flight);
- fan-out latency: delivery POST sent -> SSE frame parsed by the client (one machine, one
  monotonic clock). RSS from /proc (VmRSS, VmHWM); CPU from /proc/<pid>/stat.
Targets the figures are read against: >= 5,000 streams under 256 MiB RSS with fan-out p99 < 1 s.

End to end (--e2e N, needs the toolchain's daprd, Kafka jars and PostgreSQL): the real api
(PostgreSQL, outbox relay) -> its daprd -> Kafka (SASL_SSL/SCRAM) -> the gateway's daprd
(`pubsub-fanout`) -> gateway -> SSE client; N task creates, one at a time; latency from the
create's 201 (the commit is done) to the SSE frame. Target: p99 < 250 ms.

Usage: python -m bench.gateway [--steps 1000,2500,5000,6000,7000,8000,10000] [--rate 200] [--duration 10]
                               [--e2e 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
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

ROOT = Path(__file__).resolve().parent.parent
JWT_KEY = "bench-gateway-jwt-signing-key-" + uuid.uuid4().hex
APP_TOKEN = "bench-app-token-" + uuid.uuid4().hex
RSS_LIMIT = 256 * 1024 * 1024
P99_LIMIT = 1.0
TASK = {
    "id": "00000000-0000-0000-0000-000000000000",
    "title": "bench task 000000",
    "description": "a task that a benchmark changed, about as big as a real one",
    "priority": "medium",
    "tags": ["bench", "home"],
    "due_at": "2026-12-01T09:00:00+00:00",
    "remind_before_minutes": 30,
    "recurrence": "weekly",
    "completed": False,
    "completed_at": None,
    "created_at": "2026-11-01T00:00:00.000000+00:00",
    "updated_at": "2026-11-01T00:00:00.000000+00:00",
    "series_id": "00000000-0000-0000-0000-000000000000",
    "next_task_id": None,
}


def raise_fd_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


# -- the SSE client process ------------------------------------------------------------------------


class ClientState:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.received = 0
        self.open = 0
        self.ended = 0
        self.streams: list[asyncio.Task] = []


async def _read_stream(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, state: ClientState
) -> None:
    """HTTP/1.1 chunked body; each chunk holds whole SSE frames (the gateway writes one per send).
    Holds the writer: a StreamWriter that is garbage-collected closes its connection."""
    try:
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                return
            now = time.monotonic_ns()
            start = 0
            while (found := chunk.find(b"id: b", start)) >= 0:
                end = chunk.index(b"\n", found)
                sent_ns = int(chunk[found + 5 : end].split(b"-")[1])
                state.latencies.append((now - sent_ns) / 1e9)
                state.received += 1
                start = end
    except (asyncio.IncompleteReadError, ConnectionError, ValueError):
        pass
    finally:
        state.open -= 1
        state.ended += 1
        writer.close()


async def _open_stream(host: str, port: int, token: str, state: ClientState) -> bool:
    try:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(
            (
                f"GET /api/v1/events HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: text/event-stream\r\n"
                f"Authorization: Bearer {token}\r\n\r\n"
            ).encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
    except (OSError, asyncio.IncompleteReadError):
        return False
    if not head.startswith(b"HTTP/1.1 200"):
        writer.close()
        return False
    state.open += 1
    state.streams.append(asyncio.create_task(_read_stream(reader, writer, state)))
    return True


async def client_main(host: str, port: int) -> None:
    """Commands on stdin, one JSON object a line; answers on stdout."""
    state = ClientState()
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            return
        command = json.loads(line)
        if command["cmd"] == "open":
            started = time.perf_counter()
            tokens = command["tokens"]
            opened = failed = 0
            for i in range(0, len(tokens), 200):  # 200 handshakes in flight: under the listen backlog
                results = await asyncio.gather(
                    *(_open_stream(host, port, t, state) for t in tokens[i : i + 200])
                )
                opened += sum(results)
                failed += len(results) - sum(results)
            answer = {"opened": opened, "failed": failed, "seconds": time.perf_counter() - started}
        elif command["cmd"] == "collect":
            answer = {"latencies": state.latencies, "received": state.received, "open": state.open}
            state.latencies = []
            state.received = 0
        else:
            return
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


class ClientProcess:
    def __init__(self, host: str, port: int) -> None:
        command = [sys.executable, "-m", "bench.gateway", "--client", f"{host}:{port}"]
        self.proc = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT, env=base_env()
        )

    def ask(self, command: dict) -> dict:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    async def ask_async(self, command: dict) -> dict:
        return await asyncio.to_thread(self.ask, command)

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.proc.stdin.close()
        stop(self.proc)


# -- processes -------------------------------------------------------------------------------------


def base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TODO_", "DAPR_", "APP_API"))}
    env["PYTHONPATH"] = str(ROOT)
    return env


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def start_gateway(port: int, log_dir: Path, extra: dict[str, str] | None = None) -> subprocess.Popen:
    env = base_env()
    env.update(
        {
            "TODO_ENVIRONMENT": "local",
            "TODO_HOST": "127.0.0.1",
            "TODO_PORT": str(port),
            "TODO_JWT_SIGNING_KEY": JWT_KEY,
            "APP_API_TOKEN": APP_TOKEN,
            "TODO_MAX_CONNECTIONS": "100000",
        }
    )
    env.update(extra or {})
    log = (log_dir / f"gateway-{port}.log").open("w")
    command = [sys.executable, "-c", "from todo_gateway.main import run; run()"]
    proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    return proc


def wait_ready(port: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return
        time.sleep(0.1)
    raise TimeoutError(f"port {port} not ready")


def rss(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) in bytes."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) * 1024
    return fields["VmRSS"], fields["VmHWM"]


def cpu_seconds(pid: int) -> float:
    parts = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


# -- capacity --------------------------------------------------------------------------------------


def tokens_for(users: list[uuid.UUID]) -> list[str]:
    from todo_shared.auth import issue_token
    from todo_shared.settings import ServiceSettings

    settings = ServiceSettings(environment="test", jwt_signing_key=JWT_KEY)
    return [issue_token(settings, user, f"{user.hex[:10]}@example.com") for user in users]


class Publisher:
    """Deliveries to the gateway's subscription route, as daprd sends them (keep-alive HTTP/1.1)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.seq = 0
        self.sent = 0
        self.failed = 0

    def body(self, user: uuid.UUID) -> bytes:
        self.seq += 1
        event_id = f"b{self.seq}-{time.monotonic_ns()}"
        data = {
            "event_id": event_id,
            "type": "task.updated",
            "user_id": str(user),
            "task_id": TASK["id"],
            "occurred_at": "2026-11-01T00:00:00+00:00",
            "task": TASK,
        }
        envelope = {
            "specversion": "1.0",
            "id": event_id,
            "source": "todo-api",
            "type": "task.updated",
            "datacontenttype": "application/json",
            "data": data,
            "topic": "task-events",
            "pubsubname": "pubsub-fanout",
        }
        return json.dumps(envelope).encode()

    async def run(self, users: list[uuid.UUID], *, rate: float | None, count: int, concurrency: int) -> float:
        """Deliver `count` events (to `users` in turn; at `rate`/s, or back to back); wall seconds."""
        from bench.api import Connection

        headers = {"dapr-api-token": APP_TOKEN}
        next_index = 0
        started = time.perf_counter()

        async def worker() -> None:
            nonlocal next_index
            conn = await Connection.open("127.0.0.1", self.port)
            try:
                while next_index < count:
                    i = next_index
                    next_index += 1
                    if rate:
                        delay = started + i / rate - time.perf_counter()
                        if delay > 0:
                            await asyncio.sleep(delay)
                    status, body = await conn.request(
                        "POST", "/dapr/events/tasks", self.body(users[i % len(users)]), headers
                    )
                    if status == 200 and b"SUCCESS" in body:
                        self.sent += 1
                    else:
                        self.failed += 1
            finally:
                await conn.close()

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - started


@dataclass
class Step:
    connections: int
    connect_seconds: float = 0.0
    connect_failed: int = 0
    rss_idle: int = 0
    rss_base: int = 0  # the gateway before any stream
    steady: list[float] = field(default_factory=list)
    steady_sent: int = 0
    steady_cpu: float = 0.0
    burst: list[float] = field(default_factory=list)
    burst_sent: int = 0
    burst_seconds: float = 0.0
    rss_after: int = 0
    hwm: int = 0

    @property
    def ok(self) -> bool:
        return (
            self.hwm < RSS_LIMIT
            and pct(self.steady, 99) < P99_LIMIT
            and pct(self.burst, 99) < P99_LIMIT
            and self.connect_failed == 0
        )


async def collect_until(client: ClientProcess, expected: int, timeout: float) -> list[float]:
    latencies: list[float] = []
    received = 0
    deadline = time.monotonic() + timeout
    while received < expected and time.monotonic() < deadline:
        await asyncio.sleep(0.25)
        answer = await client.ask_async({"cmd": "collect"})
        latencies += answer["latencies"]
        received += answer["received"]
    return latencies


async def capacity(args: argparse.Namespace, workdir: Path) -> list[Step]:
    from testkit.procs import free_port

    port = free_port()
    gateway = start_gateway(port, workdir)
    client = None
    steps: list[Step] = []
    try:
        wait_ready(port, gateway)
        client = ClientProcess("127.0.0.1", port)
        base = rss(gateway.pid)[0]
        users: list[uuid.UUID] = []
        publisher = Publisher(port)
        for target in args.steps:
            step = Step(target, rss_base=base)
            new = [uuid.uuid4() for _ in range(target - len(users))]
            answer = await client.ask_async({"cmd": "open", "tokens": tokens_for(new)})
            users += new
            step.connect_seconds, step.connect_failed = answer["seconds"], answer["failed"]
            await asyncio.sleep(1.0)
            step.rss_idle = rss(gateway.pid)[0]

            count = int(args.rate * args.duration)
            before = publisher.sent
            cpu_before, wall_before = cpu_seconds(gateway.pid), time.perf_counter()
            run = asyncio.create_task(
                publisher.run(random.sample(users, len(users)), rate=args.rate, count=count, concurrency=4)
            )
            step.steady = await collect_until(client, count, args.duration + 10)
            await run
            step.steady_sent = publisher.sent - before
            step.steady_cpu = (cpu_seconds(gateway.pid) - cpu_before) / (time.perf_counter() - wall_before)

            before = publisher.sent
            run = asyncio.create_task(publisher.run(users, rate=None, count=len(users), concurrency=8))
            step.burst = await collect_until(client, len(users), 60)
            step.burst_seconds = await run
            step.burst_sent = publisher.sent - before
            step.rss_after, step.hwm = rss(gateway.pid)
            steps.append(step)
            print(f"  step {target}: {step_line(step)}", flush=True)
            if not step.ok:
                break
    finally:
        if client is not None:
            client.stop()
        stop(gateway)
    return steps


def step_line(step: Step) -> str:
    mib = 1024 * 1024
    return (
        f"{step.connections:>6} streams  connect {step.connections / step.connect_seconds:6.0f}/s"
        f"  RSS idle {step.rss_idle / mib:5.1f} MiB"
        f" ({(step.rss_idle - step.rss_base) / step.connections / 1024:4.1f} KiB/stream)"
        f"  peak {step.hwm / mib:5.1f} MiB"
        f" | steady {len(step.steady)}/{step.steady_sent} p50 {pct(step.steady, 50) * 1000:5.1f} ms"
        f" p99 {pct(step.steady, 99) * 1000:6.1f} ms  cpu {step.steady_cpu:4.0%}"
        f" | burst {len(step.burst)}/{step.burst_sent} in {step.burst_seconds:4.1f}s"
        f" p50 {pct(step.burst, 50) * 1000:6.1f} ms p99 {pct(step.burst, 99) * 1000:6.1f} ms"
    )


# -- end to end through Dapr and Kafka ---------------------------------------------------------------


async def end_to_end(count: int, workdir: Path) -> dict:
    import httpx

    from testkit.dapr import DaprEnv
    from testkit.kafka import Kafka
    from testkit.postgres import Postgres
    from testkit.procs import free_port

    suffix = uuid.uuid4().hex[:6]
    topics = {"tasks": f"task-events-{suffix}", "reminders": f"reminders-{suffix}"}
    procs: list[subprocess.Popen] = []
    with Postgres.create() as pg, Kafka.create() as kafka:
        env = DaprEnv.create(kafka=kafka, scheduler=False)
        try:
            env.topics(*topics.values(), f"{topics['tasks']}-dl", f"{topics['reminders']}-dl")
            api_port, gateway_port = free_port(), free_port()
            api_sidecar = env.sidecar("api", api_port, api_token="bench-api-" + suffix)
            gw_sidecar = env.sidecar(
                "gateway", gateway_port, api_token="bench-gw-" + suffix, app_token=APP_TOKEN
            )
            api_env = {
                **api_sidecar.env(),
                "TODO_DATABASE_URL": pg.create_database("bench_e2e"),
                "TODO_MIGRATE_ON_START": "true",
                "TODO_TASK_EVENTS_TOPIC": topics["tasks"],
            }
            procs.append(start_api(api_port, api_env, workdir))
            procs.append(
                start_gateway(
                    gateway_port,
                    workdir,
                    {
                        **gw_sidecar.env(),
                        "TODO_TASK_EVENTS_TOPIC": topics["tasks"],
                        "TODO_REMINDERS_TOPIC": topics["reminders"],
                        "TODO_TASK_EVENTS_DEAD_LETTER_TOPIC": f"{topics['tasks']}-dl",
                        "TODO_REMINDERS_DEAD_LETTER_TOPIC": f"{topics['reminders']}-dl",
                    },
                )
            )
            wait_ready(api_port, procs[0])
            wait_ready(gateway_port, procs[1])
            gw_sidecar.wait_ready()
            api_url, gw_url = f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{gateway_port}"
            async with httpx.AsyncClient(timeout=30) as http:
                credentials = {"email": f"e2e-{suffix}@example.com", "password": uuid.uuid4().hex}
                assert (
                    await http.post(f"{api_url}/api/v1/auth/register", json=credentials)
                ).status_code == 201
                token = (await http.post(f"{api_url}/api/v1/auth/login", json=credentials)).json()[
                    "access_token"
                ]
                auth = {"Authorization": f"Bearer {token}"}
                return await _measure_e2e(http, api_url, gw_url, auth, count)
        finally:
            for proc in procs:
                stop(proc)
            env.stop()


def start_api(port: int, extra: dict[str, str], workdir: Path) -> subprocess.Popen:
    env = base_env()
    env.update(
        {
            "TODO_ENVIRONMENT": "local",
            "TODO_HOST": "127.0.0.1",
            "TODO_PORT": str(port),
            "TODO_JWT_SIGNING_KEY": JWT_KEY,
        }
    )
    env.update(extra)
    log = (workdir / f"api-{port}.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-c", "from todo_api.main import run; run()"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    return proc


async def _measure_e2e(http, api_url: str, gw_url: str, auth: dict, count: int) -> dict:
    frames: asyncio.Queue[tuple[float, str]] = asyncio.Queue()

    async def read() -> None:
        async with http.stream("GET", f"{gw_url}/api/v1/events", headers=auth, timeout=None) as response:
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    frames.put_nowait((time.perf_counter(), json.loads(line[6:])["task_id"]))

    reader = asyncio.create_task(read())
    try:
        # The gateway's consumer group starts at the newest offset: wait until a change comes through.
        deadline = time.monotonic() + 60
        while True:
            assert time.monotonic() < deadline, "no event reached the gateway within 60 s"
            await http.post(f"{api_url}/api/v1/tasks", json={"title": "warm-up"}, headers=auth)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(frames.get(), 1.0)
                break
        await asyncio.sleep(1.0)
        while not frames.empty():
            frames.get_nowait()
        commit_to_sse, action_to_sse = [], []
        for n in range(count):
            sent = time.perf_counter()
            response = await http.post(f"{api_url}/api/v1/tasks", json={"title": f"e2e {n}"}, headers=auth)
            committed = time.perf_counter()
            task_id = response.json()["id"]
            while True:
                received, seen = await asyncio.wait_for(frames.get(), 10)
                if seen == task_id:
                    break
            commit_to_sse.append(max(0.0, received - committed))
            action_to_sse.append(received - sent)
        lag = (await http.get(f"{gw_url}/metrics")).text
        return {"commit": commit_to_sse, "action": action_to_sse, "lag_metric": _lag_summary(lag)}
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader


def _lag_summary(metrics_text: str) -> str:
    total = count = 0.0
    for line in metrics_text.splitlines():
        if line.startswith("gateway_delivery_lag_seconds_sum"):
            total = float(line.split()[-1])
        elif line.startswith("gateway_delivery_lag_seconds_count"):
            count = float(line.split()[-1])
    return f"mean {total / count * 1000:.1f} ms over {int(count)}" if count else "none"


# -- main ------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--steps", default="1000,2500,5000,6000,7000,8000,10000", help="stream counts to hold, in order"
    )
    parser.add_argument("--rate", type=float, default=200.0, help="steady deliveries per second")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of the steady phase per step")
    parser.add_argument("--e2e", type=int, default=0, help="task creates timed api -> Dapr -> Kafka -> SSE")
    parser.add_argument("--client", help=argparse.SUPPRESS)
    args = parser.parse_args()
    fds = raise_fd_limit()

    import uvloop

    if args.client:
        host, port = args.client.rsplit(":", 1)
        uvloop.run(client_main(host, int(port)))
        return
    args.steps = [int(n) for n in args.steps.split(",")]
    sys.path.insert(0, str(ROOT))
    print(
        f"bench/gateway.py: {os.cpu_count()} CPUs, fd limit {fds}, steps {args.steps}, "
        f"steady {args.rate:.0f} events/s for {args.duration:.0f}s, burst = one event per stream"
    )
    with tempfile.TemporaryDirectory(prefix="todo-bench-gw-") as tmp:
        steps = uvloop.run(capacity(args, Path(tmp)))
        e2e = uvloop.run(end_to_end(args.e2e, Path(tmp))) if args.e2e else None

    print()
    for step in steps:
        print("  " + step_line(step))
    held = [s for s in steps if s.ok]
    best = held[-1].connections if held else 0
    print()
    print(
        f"  streams held by one gateway process with peak RSS < 256 MiB and fan-out p99 < 1 s: {best}"
        f"   (target >= 5000; largest step tried {steps[-1].connections if steps else 0})"
    )
    if held:
        last = held[-1]
        print(
            f"  at {last.connections} streams: {last.hwm / 1024 / 1024:.1f} MiB peak RSS, steady p99 "
            f"{pct(last.steady, 99) * 1000:.1f} ms, burst of {last.burst_sent} events p99 "
            f"{pct(last.burst, 99) * 1000:.1f} ms ({last.burst_sent / last.burst_seconds:.0f} events/s)"
        )
    if e2e:
        commit, action = e2e["commit"], e2e["action"]
        print(
            f"  api commit -> SSE receipt over {len(commit)} task creates (real daprd + Kafka): "
            f"p50 {pct(commit, 50) * 1000:.1f} ms  p99 {pct(commit, 99) * 1000:.1f} ms  "
            f"max {max(commit) * 1000:.1f} ms   (target p99 < 250 ms)"
        )
        print(
            f"  create request sent -> SSE receipt: p50 {pct(action, 50) * 1000:.1f} ms  "
            f"p99 {pct(action, 99) * 1000:.1f} ms; mean {statistics.fmean(action) * 1000:.1f} ms; "
            f"gateway's own lag metric (event time -> write): {e2e['lag_metric']}"
        )


if __name__ == "__main__":
    main()
