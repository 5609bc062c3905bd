"""Clients of the end-to-end suite: a signed-in user, a browser-like event stream that
reconnects with Last-Event-ID, and a steady HTTP load that counts every failure."""

from __future__ import annotations

import contextlib
import json
import queue
import re
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import httpx
import yaml

from testkit import machine
from testkit.node import status

NAMESPACE = "todo-local"
ROOT = Path(__file__).resolve().parents[2]
# How long a client of the suite waits for an answer: past the edge's own read timeout (nginx's
# proxy_read_timeout, 60 s), where the product itself gives up on an upstream. A request that
# gets no answer by then fails; a slow answer is slow, not failed, and `Load.latency` reports it.
# With 15 s, SC-002 failed on task pages the web served in 15-17 s while both cores were busy.
ANSWER_TIMEOUT = 65.0


def signed_in(url: str) -> dict[str, str]:
    """A new user's bearer header, through the edge."""
    account = {"email": f"e2e-{uuid.uuid4().hex[:8]}@example.com", "password": secrets.token_urlsafe(16)}
    registered = httpx.post(f"{url}/api/v1/auth/register", json=account, timeout=30)
    assert registered.status_code == 201, registered.text
    login = httpx.post(f"{url}/api/v1/auth/login", json=account, timeout=30)
    assert login.status_code == 200, login.text
    return {"Authorization": f"Bearer {login.json()['access_token']}"}


class EventStream:
    """GET /api/v1/events in a thread, as a browser's EventSource: when the stream ends it
    reconnects after the server's `retry` hint, sending the last event id (Last-Event-ID).
    Each event (a dict of its fields) lands in `events`; `reconnects` counts the new streams."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        self.events: queue.Queue = queue.Queue()
        self.reconnects = 0
        self.errors: list[str] = []
        self.last_id: str | None = None
        self.opened = threading.Event()
        self._retry = 1.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(url, headers), daemon=True)
        self._thread.start()
        assert self.opened.wait(30), f"the event stream did not open: {self.errors}"

    def _run(self, url: str, headers: dict[str, str]) -> None:
        while not self._stop.is_set():
            sent = dict(headers) | ({"Last-Event-ID": self.last_id} if self.last_id else {})
            try:
                self._read(url, sent)
            except httpx.HTTPError as exc:
                self.errors.append(repr(exc))
            if self._stop.wait(self._retry):
                return
            self.reconnects += 1

    def _read(self, url: str, headers: dict[str, str]) -> None:
        timeout = httpx.Timeout(10, read=None)
        with httpx.stream("GET", f"{url}/api/v1/events", headers=headers, timeout=timeout) as response:
            if response.status_code != 200:
                self.errors.append(f"{response.status_code}: {response.read()!r}")
                return
            self.opened.set()
            frame: dict[str, str] = {}
            for line in response.iter_lines():
                if self._stop.is_set():
                    return
                if line == "":
                    if "retry" in frame:
                        self._retry = int(frame["retry"]) / 1000
                    if "event" in frame:
                        self.last_id = frame.get("id", self.last_id)
                        self.events.put(frame)
                    frame = {}
                elif not line.startswith(":"):
                    key, _, value = line.partition(":")
                    frame[key] = value.removeprefix(" ")

    def next(self, timeout: float) -> dict[str, str]:
        return self.events.get(timeout=timeout)

    def drain(self) -> list[dict[str, str]]:
        found = []
        while not self.events.empty():
            found.append(self.events.get_nowait())
        return found

    def close(self) -> None:
        self._stop.set()


@dataclass
class Load:
    """`workers` threads sending GETs through the edge in turn over `paths`, as fast as they
    are answered or at `target_rate` requests/s in all (a worker behind its schedule sends at once);
    every answer but the expected status, and every transport error, is a failure."""

    url: str
    headers: dict[str, str]
    paths: dict[str, int]  # path -> the status it must answer
    workers: int = 6
    target_rate: float = 0.0  # requests per second to aim at, over all workers (0: as fast as answered)
    alone: bool = True  # hold the machine meanwhile: no other test runs (testkit/machine.py)
    sent: int = 0
    failures: list[str] = field(default_factory=list)
    failed_at: list[float] = field(default_factory=list)  # time.time() of each failure
    durations: list[float] = field(default_factory=list)  # seconds each request took, answered or not
    logs: PodLogs | None = None  # the pods' warnings meanwhile, if the caller follows them
    seconds: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)
    _held: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    def __enter__(self) -> Load:
        if self.alone:
            self._held.enter_context(machine.alone())
        self._started = time.monotonic()
        for _ in range(self.workers):
            thread = threading.Thread(target=self._work, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def _work(self) -> None:
        paths = list(self.paths.items())
        with httpx.Client(base_url=self.url, headers=self.headers, timeout=ANSWER_TIMEOUT) as client:
            turn = 0
            period = self.workers / self.target_rate if self.target_rate else 0.0
            due = time.monotonic()
            while not self._stop.wait(max(0.0, due - time.monotonic())):
                due += period
                path, status = paths[turn % len(paths)]
                turn += 1
                sent = time.monotonic()
                try:
                    answer = client.get(path)
                    failure = None if answer.status_code == status else f"{path}: {answer.status_code}"
                except httpx.HTTPError as exc:
                    failure = f"{path}: {exc!r}"
                with self._lock:
                    self.sent += 1
                    self.durations.append(time.monotonic() - sent)
                    if failure:
                        self.failures.append(failure)
                        self.failed_at.append(time.time())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)
        self.seconds = time.monotonic() - self._started
        self._held.close()

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds else 0.0

    @property
    def latency(self) -> str:
        """The requests' time to answer: median, 99th percentile and slowest."""
        if not self.durations:
            return "no request"
        ordered = sorted(self.durations)
        p50, p99 = (ordered[min(len(ordered) - 1, int(len(ordered) * q))] for q in (0.5, 0.99))
        return f"answered in {p50:.2f} s (median), {p99:.2f} s (p99), {ordered[-1]:.2f} s (slowest)"


class PodLogs:
    """Follows the node's container logs (kubelet's podLogsDir) of the pods whose name starts
    with one of `prefixes` ("<pod prefix>" in the app's namespace, or "<namespace>/<pod
    prefix>"), from pods that start or stop meanwhile too, and keeps the warning and error
    lines (nginx's too; only the errors of the daprd sidecars, whose start-up warns about
    nothing that matters here) and the services' request lines that took `SLOW_MS` or more:
    printed next to a failed request, they name its cause, a timed-out one's too (a pod's logs
    go with the pod, so they are read while it runs)."""

    LEVEL = re.compile(
        r'"level": ?"(warning|error|critical)"|level=(warning|error|fatal)|\[(warn|error|crit|alert|emerg)\]',
        re.IGNORECASE,
    )
    ERROR = re.compile(r'"level": ?"(error|fatal)"', re.IGNORECASE)
    DURATION = re.compile(r'"duration_ms": ?(\d+)')  # todo_shared.app's line for each request
    SLOW_MS = 2000

    def __init__(self, prefixes: tuple[str, ...], root: Path | None = None) -> None:
        self.root = root or Path(status()["dir"]) / "pod-logs"
        self.prefixes = tuple(
            prefix.replace("/", "_") if "/" in prefix else f"{NAMESPACE}_{prefix}" for prefix in prefixes
        )
        self.lines: list[tuple[float, str]] = []  # (time.time() it was written, "pod/container: line")
        self._offsets: dict[Path, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, daemon=True)

    def __enter__(self) -> PodLogs:
        self._scan(keep=False)  # only what is written from now on
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(10)
        self._scan()

    def _follow(self) -> None:
        while not self._stop.wait(0.5):
            self._scan()

    def _logs(self) -> list[Path]:
        """The followed pods' log files (<namespace>_<pod>_<uid>/<container>/<n>.log). A pod's
        folder can go while it is listed: the kubelet removes a deleted pod's logs."""
        found: list[Path] = []
        for pod in self.root.iterdir():
            if pod.name.startswith(self.prefixes):
                with contextlib.suppress(FileNotFoundError):
                    found += pod.glob("*/*.log")
        return found

    def _scan(self, keep: bool = True) -> None:
        for path in self._logs():
            try:
                with path.open("rb") as log:
                    log.seek(self._offsets.get(path, 0))
                    chunk = log.read()
            except OSError:  # the pod and its logs went
                continue
            done = chunk.rfind(b"\n") + 1
            self._offsets[path] = self._offsets.get(path, 0) + done
            if keep:
                pod, container = path.parts[-3].split("_")[1], path.parts[-2]
                for line in chunk[:done].decode(errors="replace").splitlines():
                    if (self.ERROR if container == "daprd" else self.LEVEL).search(line) or self._slow(line):
                        self.lines.append((self._written(line), f"{pod}/{container}: {line}"))

    def _slow(self, line: str) -> bool:
        duration = self.DURATION.search(line)
        return bool(duration) and int(duration[1]) >= self.SLOW_MS

    @staticmethod
    def _written(line: str) -> float:
        """A CRI log line's time (its first field: RFC 3339 in UTC, up to nanoseconds)."""
        whole, _, fraction = line.partition(" ")[0].rstrip("Z").partition(".")
        try:
            return datetime.fromisoformat(f"{whole}.{fraction[:6]:0<6}+00:00").timestamp()
        except ValueError:
            return time.time()

    def around(self, times: list[float], before: float = 20.0, after: float = 20.0) -> list[str]:
        """The kept lines written from `before` s ahead of the first of `times` to `after` s past
        the last, in time order (a request the client gave up on is logged when it ends)."""
        if not times:
            return []
        start, end = min(times) - before, max(times) + after
        return [line for written, line in sorted(self.lines) if start <= written <= end]


def endpoint_programming() -> str:
    """How long the node's kube-proxy took to bring endpoint changes into its rules, one line
    (its histogram kubeproxy_network_programming_duration_seconds): printed next to the
    zero-downtime results, which depend on it (a stopping pod's preStop sleep must cover it)."""
    config = yaml.safe_load((Path(status()["dir"]) / "kube-proxy.yaml").read_text())
    text = httpx.get(f"http://{config['metricsBindAddress']}/metrics", timeout=10).text
    buckets = {
        match[1]: int(float(match[2]))
        for match in re.finditer(r'network_programming_duration_seconds_bucket\{.*le="([^"]+)"\} (\S+)', text)
    }
    total = buckets.get("+Inf", 0)
    within = ", ".join(f"{buckets[le]} within {le} s" for le in ("1", "5", "10") if le in buckets)
    return f"kube-proxy: {total} endpoint changes programmed; {within}"


def record(name: str, seconds: float) -> None:
    """Keep a timing in artifacts/e2e/timings.json (the README reports them)."""
    path = ROOT / "artifacts" / "e2e" / "timings.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    found = json.loads(path.read_text()) if path.is_file() else {}
    path.write_text(json.dumps(found | {name: round(seconds, 1)}, indent=2) + "\n")
    print(f"\n{name}: {seconds:.1f}s")
