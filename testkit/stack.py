"""The whole Todo app in process mode: PostgreSQL, Kafka (SASL_SSL/SCRAM, like Redpanda
Cloud), the Dapr scheduler, each service with its own daprd, and nginx in front routing
paths the way the ingress does. `make dev` runs it; the end-to-end tests and the event
benchmark use it with the session's engines.

    with Stack.start() as stack:            # or Stack.start(postgres=..., kafka=..., dapr=...)
        print(stack.url)                    # http://127.0.0.1:<port>/ through nginx
        stack.services["gateway"].url       # a service directly (/healthz, /metrics)

Routes (as charts/todo's Ingress): /api/v1/events → gateway (unbuffered, long reads: SSE),
/api/v1/notifications → notifier, /api/v1/ → api, / → web.

Settings: TODO_ENVIRONMENT=local, one random JWT signing key shared by the services (never
printed), a random Dapr API token per sidecar and app token per app. Logs (JSON lines) go to
<folder>/logs/<service>.log; `python -m testkit.stack` prints where. Ctrl-C (or SIGTERM)
stops services first, then sidecars, the broker and the database, and removes the folder.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import shutil
import signal
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

from testkit.dapr import DaprEnv, Process, Sidecar
from testkit.procs import free_port, http_status

ROOT = Path(__file__).resolve().parent.parent
SERVICES = ("api", "notifier", "gateway", "web")
NGINX_CONF = """\
worker_processes 1;
daemon off;
pid {folder}/nginx.pid;
error_log {folder}/logs/nginx-error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log {folder}/logs/nginx-access.log;
    client_body_temp_path {folder}/nginx/body;
    proxy_temp_path {folder}/nginx/proxy;
    fastcgi_temp_path {folder}/nginx/fastcgi;
    uwsgi_temp_path {folder}/nginx/uwsgi;
    scgi_temp_path {folder}/nginx/scgi;
    client_max_body_size 1m;
    proxy_http_version 1.1;
    proxy_set_header Host $host;
    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
    proxy_set_header X-Forwarded-Proto $scheme;
    proxy_set_header X-Request-ID $request_id;
    server {{
        listen 127.0.0.1:{port};
        location /api/v1/events {{
            proxy_pass http://127.0.0.1:{gateway};
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_read_timeout 1h;
        }}
        location /api/v1/notifications {{ proxy_pass http://127.0.0.1:{notifier}; }}
        location /api/v1/ {{ proxy_pass http://127.0.0.1:{api}; }}
        location / {{ proxy_pass http://127.0.0.1:{web}; }}
    }}
}}
"""


@dataclass
class Service:
    name: str
    port: int
    process: Process
    sidecar: Sidecar | None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 60) -> None:
        self.process.wait_until(lambda: http_status(f"{self.url}/readyz") == 200, "/readyz 200", timeout)

    def stop(self) -> None:
        self.process.stop(grace=20)  # SIGTERM: the service drains, then exits


@dataclass
class Stack:
    folder: Path
    dapr: DaprEnv
    topics: dict[str, str]
    services: dict[str, Service] = field(default_factory=dict)
    proxy: Process | None = None
    port: int = field(default_factory=free_port)
    owned: list = field(default_factory=list)  # engines this stack started (stopped with it)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @classmethod
    def start(
        cls,
        *,
        postgres=None,
        kafka=None,
        dapr: DaprEnv | None = None,
        services: tuple[str, ...] = SERVICES,
        topic_suffix: str | None = None,
        env: dict[str, str] | None = None,
        say=lambda message: None,
    ) -> Stack:
        """Start the app. Engines not given are started here (and stopped with the stack).
        `topic_suffix` isolates this stack's topics on a shared broker (tests); `env` adds
        settings to every service (e.g. TODO_ARGON2_TIME_COST for cheap test hashes)."""
        owned: list = []
        folder = Path(tempfile.mkdtemp(prefix="todo-stack-"))
        try:
            if postgres is None:
                from testkit.postgres import Postgres

                say("starting PostgreSQL ...")
                postgres = Postgres.create().start()
                owned.append(postgres)
            if kafka is None:
                from testkit.kafka import Kafka

                say("starting Kafka (KRaft, SASL_SSL + SCRAM-SHA-256) ...")
                kafka = Kafka.create().start()
                owned.append(kafka)
            if dapr is None:
                say("starting the Dapr scheduler ...")
                dapr = DaprEnv.create(kafka=kafka, state_dsn=postgres.create_database("dapr_state"))
                owned.append(dapr)
            suffix = f"-{topic_suffix}" if topic_suffix else ""
            topics = {
                name: f"{name}{suffix}"
                for name in ("task-events", "task-events-dead-letter", "reminders", "reminders-dead-letter")
            }
            dapr.topics(*topics.values())
            stack = cls(folder=folder, dapr=dapr, topics=topics, owned=owned)
        except BaseException:
            for engine in reversed(owned):
                engine.stop()
            shutil.rmtree(folder, ignore_errors=True)
            raise
        try:
            stack._start_services(postgres, services, env or {}, say)
            if set(SERVICES) <= set(services):
                stack._start_proxy()
        except BaseException:
            stack.stop()
            raise
        return stack

    def _start_services(self, postgres, names: tuple[str, ...], extra: dict[str, str], say) -> None:
        (self.folder / "logs").mkdir()
        ports = {name: free_port() for name in names}
        common = {
            "TODO_ENVIRONMENT": "local",
            "TODO_HOST": "127.0.0.1",
            "TODO_JWT_SIGNING_KEY": secrets.token_urlsafe(48),
            "TODO_TASK_EVENTS_TOPIC": self.topics["task-events"],
            "TODO_TASK_EVENTS_DEAD_LETTER_TOPIC": self.topics["task-events-dead-letter"],
            "TODO_REMINDERS_TOPIC": self.topics["reminders"],
            "TODO_REMINDERS_DEAD_LETTER_TOPIC": self.topics["reminders-dead-letter"],
            "PYTHONUNBUFFERED": "1",
        }
        own = {
            "api": {"TODO_DATABASE_URL": postgres.create_database(f"api_{uuid.uuid4().hex[:8]}")},
            "notifier": {"TODO_DATABASE_URL": postgres.create_database(f"notifier_{uuid.uuid4().hex[:8]}")},
            "web": {"TODO_API_URL": f"http://127.0.0.1:{ports.get('api', 0)}"},
        }
        for name in names:
            say(f"starting {name} with its daprd ...")
            api_token, app_token = secrets.token_hex(24), secrets.token_hex(24)
            sidecar = self.dapr.sidecar(name, ports[name], api_token=api_token, app_token=app_token)
            environment = {
                **{k: v for k, v in os.environ.items() if not k.startswith(("TODO_", "DAPR_", "APP_API_"))},
                **common,
                **own.get(name, {}),
                "TODO_MIGRATE_ON_START": "true",
                "TODO_PORT": str(ports[name]),
                **sidecar.env(),
                **extra,
            }
            executable = Path(sys.executable).parent / f"todo-{name}"
            log = self.folder / "logs" / f"{name}.log"
            process = Process(name, [str(executable)], log, env=environment, inherit_env=False)
            self.services[name] = Service(name, ports[name], process, sidecar)
            process.start()
        for service in self.services.values():
            service.wait_ready()
            service.sidecar.wait_ready()

    def _start_proxy(self) -> None:
        (self.folder / "nginx").mkdir()
        ports = {name: service.port for name, service in self.services.items()}
        conf = self.folder / "nginx.conf"
        conf.write_text(NGINX_CONF.format(folder=self.folder, port=self.port, **ports))
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        logs = self.folder / "logs"
        argv = [nginx, "-p", str(self.folder), "-c", str(conf), "-e", str(logs / "nginx-error.log")]
        self.proxy = Process("nginx", argv, logs / "nginx.log")
        self.proxy.start()
        self.proxy.wait_until(lambda: http_status(f"{self.url}/healthz") == 200, "the proxy answering", 30)

    def stop(self) -> None:
        if self.proxy:
            self.proxy.stop()
        for service in self.services.values():
            service.stop()
        for service in self.services.values():
            if service.sidecar:
                service.sidecar.stop()
        for engine in reversed(self.owned):
            engine.stop()
        if os.environ.get("TODO_KEEP_STACK") != "1":
            shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description="Run the Todo app in process mode (make dev).")
    parser.parse_args()
    # Ctrl-C stops everything, also when this was started with SIGINT ignored (a background
    # job of a shell without job control); SIGTERM from a supervisor does the same.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    started = time.monotonic()

    def say(message: str) -> None:
        print(f"dev: {message}", flush=True)

    try:
        with Stack.start(say=say) as stack:
            say(f"ready in {time.monotonic() - started:.0f}s: open {stack.url}/")
            say(f"logs: {stack.folder / 'logs'} (TODO_KEEP_STACK=1 keeps them after exit)")
            for name, service in stack.services.items():
                say(f"  {name:9} {service.url} (/healthz /readyz /metrics), daprd {service.sidecar.url}")
            say("Ctrl-C stops everything")
            with contextlib.suppress(KeyboardInterrupt):
                while all(s.process.running for s in stack.services.values()):
                    time.sleep(0.5)
                stopped = [name for name, s in stack.services.items() if not s.process.running]
                if stopped:
                    say(f"{', '.join(stopped)} exited; see the logs. Stopping.")
                    return 1
    except KeyboardInterrupt:
        pass
    say("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
