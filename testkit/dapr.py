"""Real Dapr sidecars for tests and process-mode runs: daprd and the Dapr scheduler, built
from the pinned Dapr module (scripts/toolchain.py), loading the project's own components.

    env = DaprEnv.create(kafka=kafka, state_dsn=postgres.create_database("dapr_state"))
    env.topics("task-events-1a2b", partitions=3)
    with env.sidecar("notifier", app_port=8081, app_token="...") as sidecar:
        subprocess.Popen([...], env={**os.environ, **sidecar.env()})
        sidecar.wait_ready()
    env.stop()

The resources folder holds the component files of charts/todo/dapr/ exactly as the chart
ships them (pub/sub on Kafka with SASL/SCRAM over TLS, state on PostgreSQL v2, every one
reading its connection details from the secret store named `secretstore`), plus the local
stand-in for the cluster's Kubernetes secret store: charts/todo/dapr/local/secretstore.yaml
(`secretstores.local.file`, multi-valued, so `secretKeyRef: {name: todo-kafka, key:
password}` resolves the same way as against a Kubernetes Secret) and the secrets file it
reads (mode 0600, in the private temporary folder). daprd trusts the test broker's CA
through SSL_CERT_FILE, as it trusts Redpanda Cloud's public CA through the system store.
Every daprd of one DaprEnv gets charts/todo/dapr/local/config.yaml: service invocation
resolves app ids in the env's own SQLite file, so two runs on one machine (two test workers,
`make dev` beside a test) never reach each other's "api".

Every process listens on loopback ports chosen free at start, runs in its own process
group, and logs to a file in the folder (`tail()` shows the end). `stop()` (also at
interpreter exit) stops every sidecar and the scheduler; a folder whose owner died is reaped
by the next `DaprEnv.create()`.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

from testkit.procs import free_port, http_status, kill_groups, reap_orphans

ROOT = Path(__file__).resolve().parent.parent
COMPONENTS = ROOT / "charts" / "todo" / "dapr"
LOCAL_SECRET_STORE = COMPONENTS / "local" / "secretstore.yaml"
LOCAL_CONFIGURATION = COMPONENTS / "local" / "config.yaml"
BIN = ROOT / ".tools" / "bin"
STATE_FILE = "state.json"


def _tail(path: Path, lines: int) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _binary(name: str) -> str:
    path = BIN / name
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run `make tools` (scripts/toolchain.py builds it)")
    return str(path)


@dataclass
class Process:
    """One long-running program in its own process group, logging to a file."""

    name: str
    argv: list[str]
    log_file: Path
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    inherit_env: bool = True  # False: `env` is the whole environment
    popen: subprocess.Popen | None = None

    def start(self) -> None:
        with self.log_file.open("ab") as log:
            self.popen = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **self.env} if self.inherit_env else self.env,
                cwd=self.cwd,
                start_new_session=True,
            )

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self, grace: float = 10) -> None:
        if self.popen is not None:
            kill_groups([self.popen.pid], grace=grace)
            self.popen.wait()
            self.popen = None

    def wait_until(self, check, what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running:
                log = _tail(self.log_file, 40)
                raise RuntimeError(f"{self.name} exited while waiting for {what}:\n{log}")
            if check():
                return
            time.sleep(0.05)
        raise TimeoutError(f"{self.name}: no {what} after {timeout:.0f}s:\n{_tail(self.log_file, 40)}")


@dataclass
class Scheduler:
    """The Dapr scheduler (Jobs API backend) with its embedded etcd, standalone mode."""

    folder: Path
    port: int = field(default_factory=free_port)
    healthz_port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    etcd_client_port: int = field(default_factory=free_port)
    etcd_peer_port: int = field(default_factory=free_port)
    process: Process | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> Self:
        self.folder.mkdir(parents=True, exist_ok=True)
        member = "dapr-scheduler-server-0"
        self.process = Process(
            "dapr scheduler",
            [
                _binary("scheduler"),
                "--mode=standalone",
                f"--id={member}",
                "--listen-address=127.0.0.1",
                f"--port={self.port}",
                "--healthz-listen-address=127.0.0.1",
                f"--healthz-port={self.healthz_port}",
                "--metrics-listen-address=127.0.0.1",
                f"--metrics-port={self.metrics_port}",
                f"--etcd-data-dir={self.folder / 'etcd'}",
                "--etcd-client-listen-address=127.0.0.1",
                f"--etcd-client-port={self.etcd_client_port}",
                f"--etcd-initial-cluster={member}=http://127.0.0.1:{self.etcd_peer_port}",
            ],
            self.folder / "scheduler.log",
        )
        self.process.start()
        self.process.wait_until(
            lambda: http_status(f"http://127.0.0.1:{self.healthz_port}/healthz") == 200, "healthz", timeout
        )
        return self

    def stop(self) -> None:
        if self.process:
            self.process.stop()


@dataclass
class Sidecar:
    """One daprd in standalone mode next to an app listening on `app_port`."""

    app_id: str
    app_port: int | None  # None: an app that only calls out (publishes), never called back
    resources: Path
    folder: Path
    scheduler: str | None = None
    api_token: str | None = None  # DAPR_API_TOKEN: what the app presents to daprd
    app_token: str | None = None  # APP_API_TOKEN: what daprd presents to the app
    ca_file: Path | None = None
    config: Path | None = None  # a Dapr Configuration file
    log_level: str = "info"
    http_port: int = field(default_factory=free_port)
    grpc_port: int = field(default_factory=free_port)
    internal_grpc_port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    process: Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def log_file(self) -> Path:
        return self.folder / f"daprd-{self.app_id}-{self.http_port}.log"

    def env(self) -> dict[str, str]:
        """What the app process needs to talk to this sidecar (and to check its calls)."""
        values = {"DAPR_HTTP_PORT": str(self.http_port), "DAPR_GRPC_PORT": str(self.grpc_port)}
        if self.api_token:
            values["DAPR_API_TOKEN"] = self.api_token
        if self.app_token:
            values["APP_API_TOKEN"] = self.app_token
        return values

    def start(self, timeout: float = 60) -> Self:
        argv = [
            _binary("daprd"),
            "--mode=standalone",
            f"--app-id={self.app_id}",
            f"--resources-path={self.resources}",
            "--dapr-listen-addresses=127.0.0.1",
            f"--dapr-http-port={self.http_port}",
            f"--dapr-grpc-port={self.grpc_port}",
            "--dapr-internal-grpc-listen-address=127.0.0.1",
            f"--dapr-internal-grpc-port={self.internal_grpc_port}",
            "--metrics-listen-address=127.0.0.1",
            f"--metrics-port={self.metrics_port}",
            f"--log-level={self.log_level}",
            "--dapr-graceful-shutdown-seconds=5",
        ]
        if self.app_port is not None:
            argv += [f"--app-port={self.app_port}", "--app-protocol=http", "--app-channel-address=127.0.0.1"]
        if self.scheduler:
            argv.append(f"--scheduler-host-address={self.scheduler}")
        if self.config:
            argv.append(f"--config={self.config}")
        env = {}
        if self.api_token:
            env["DAPR_API_TOKEN"] = self.api_token
        if self.app_token:
            env["APP_API_TOKEN"] = self.app_token
        if self.ca_file:
            env["SSL_CERT_FILE"] = str(self.ca_file)
        self.process = Process(f"daprd {self.app_id}", argv, self.log_file, env=env)
        self.process.start()
        # Components loaded (the outbound API works); the app may come up after its sidecar.
        self.process.wait_until(
            lambda: http_status(f"{self.url}/v1.0/healthz/outbound") == 204, "outbound healthz", timeout
        )
        return self

    def wait_ready(self, timeout: float = 60) -> None:
        """Until daprd reports healthy: components loaded and the app's port reached."""
        assert self.process, "start() first"
        self.process.wait_until(lambda: http_status(f"{self.url}/v1.0/healthz") == 204, "healthz", timeout)

    def stop(self) -> None:
        if self.process:
            self.process.stop()

    def restart(self, timeout: float = 60) -> Self:
        """Stop and start again on the same ports (its app keeps its DAPR_HTTP_PORT)."""
        self.stop()
        return self.start(timeout)

    def tail(self, lines: int = 40) -> str:
        return _tail(self.log_file, lines)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class DaprEnv:
    """A resources folder (the project's components + local secrets), the scheduler, and the
    sidecars started from it."""

    folder: Path
    kafka: object | None = None  # testkit.kafka.Kafka
    state_dsn: str | None = None
    scheduler: Scheduler | None = None
    sidecars: list[Sidecar] = field(default_factory=list)

    @classmethod
    def create(
        cls, *, kafka=None, state_dsn: str | None = None, parent: str | None = None, scheduler: bool = True
    ) -> DaprEnv:
        base = Path(parent or tempfile.gettempdir())
        reap_orphans(base, "todo-dapr-*")
        folder = Path(tempfile.mkdtemp(prefix="todo-dapr-", dir=base))
        env = cls(folder=folder, kafka=kafka, state_dsn=state_dsn)
        atexit.register(env.stop)
        try:
            env._write_resources()
            if scheduler:
                env.scheduler = Scheduler(env.folder / "scheduler").start()
            env._save_state()
        except BaseException:
            env.stop()
            raise
        return env

    @property
    def resources(self) -> Path:
        return self.folder / "resources"

    @property
    def config(self) -> Path:
        return self.folder / "config.yaml"

    def secrets(self) -> dict[str, dict[str, str]]:
        """The secret store's content: what a cluster holds as Secrets todo-kafka and todo-state."""
        values: dict[str, dict[str, str]] = {}
        if self.kafka is not None:
            values["todo-kafka"] = {
                "brokers": self.kafka.bootstrap,
                "username": self.kafka.username,
                "password": self.kafka.password,
            }
        if self.state_dsn is not None:
            values["todo-state"] = {"connection-string": self.state_dsn}
        return values

    def _write_resources(self) -> None:
        self.resources.mkdir(parents=True)
        for component in sorted(COMPONENTS.glob("*.yaml")):
            # Only what the environment can back: no Kafka, no pub/sub components.
            text = component.read_text()
            needs_kafka, needs_state = "todo-kafka" in text, "todo-state" in text
            if (needs_kafka and self.kafka is None) or (needs_state and self.state_dsn is None):
                continue
            shutil.copy(component, self.resources / component.name)
        secrets_file = self.folder / "secrets.json"
        fd = os.open(secrets_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(self.secrets(), handle)
        store = LOCAL_SECRET_STORE.read_text().replace("SECRETS_FILE", str(secrets_file))
        (self.resources / "secretstore.yaml").write_text(store)
        names = str(self.folder / "names.db")
        self.config.write_text(LOCAL_CONFIGURATION.read_text().replace("NAME_RESOLUTION_DB", names))

    def topics(self, *names: str, partitions: int = 3) -> list[str]:
        """Create Kafka topics (as the broker's admin): Redpanda Cloud does not auto-create."""
        assert self.kafka is not None, "DaprEnv.create(kafka=...) first"
        return [self.kafka.create_topic(name, partitions=partitions) for name in names]

    def sidecar(
        self,
        app_id: str,
        app_port: int | None,
        *,
        api_token: str | None = None,
        app_token: str | None = None,
        start: bool = True,
        **options,
    ) -> Sidecar:
        sidecar = Sidecar(
            app_id=app_id,
            app_port=app_port,
            resources=self.resources,
            folder=self.folder,
            scheduler=self.scheduler.address if self.scheduler else None,
            api_token=api_token,
            app_token=app_token,
            ca_file=self.kafka.ca_file if self.kafka is not None else None,
            config=self.config,
            **options,
        )
        self.sidecars.append(sidecar)
        if start:
            sidecar.start()
            self._save_state()
        return sidecar

    def _save_state(self) -> None:
        pids = [s.process.popen.pid for s in self.sidecars if s.process and s.process.popen]
        if self.scheduler and self.scheduler.process and self.scheduler.process.popen:
            pids.append(self.scheduler.process.popen.pid)
        with contextlib.suppress(OSError):
            (self.folder / STATE_FILE).write_text(json.dumps({"owner": os.getpid(), "pids": pids}))

    def stop(self) -> None:
        for sidecar in self.sidecars:
            sidecar.stop()
        if self.scheduler:
            self.scheduler.stop()
        if os.environ.get("TODO_KEEP_DAPR") != "1":
            shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = ["DaprEnv", "Scheduler", "Sidecar"]
