"""A real PostgreSQL server for tests: Debian's postgresql-15 binaries, a private data folder, a free port.

    with Postgres.create() as pg:
        dsn = pg.create_database("todo_test")   # postgresql://todo@127.0.0.1:PORT/todo_test

`python -m testkit.postgres` starts one and prints its DSN (Ctrl-C stops it).
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from testkit.procs import free_port

PG_MAJOR = os.environ.get("TODO_PG_MAJOR", "15")


def pg_bin(tool: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/{PG_MAJOR}/bin/{tool}"))
    if not found:
        raise FileNotFoundError(f"PostgreSQL {PG_MAJOR} not installed (run `make bootstrap`): no {tool}")
    return found[-1]


@dataclass
class Postgres:
    workdir: Path
    port: int = 0
    user: str = "todo"
    process: subprocess.Popen | None = None
    databases: list[str] = field(default_factory=list)

    @classmethod
    def create(cls) -> Postgres:
        shm = "/dev/shm"  # noqa: S108 - a private mkdtemp folder on tmpfs
        base = shm if os.access(shm, os.W_OK) else None
        return cls(workdir=Path(tempfile.mkdtemp(prefix="todo-pg-", dir=base)))

    def __enter__(self) -> Postgres:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def data(self) -> Path:
        return self.workdir / "data"

    def dsn(self, database: str = "postgres", driver: str = "postgresql") -> str:
        return f"{driver}://{self.user}@127.0.0.1:{self.port}/{database}"

    def _as_postgres_user(self) -> dict:
        """initdb and postgres refuse to run as root; run them as the `postgres` system user."""
        if os.geteuid() != 0:
            return {}
        import pwd

        account = pwd.getpwnam("postgres")
        os.chown(self.workdir, account.pw_uid, account.pw_gid)
        return {"user": account.pw_uid, "group": account.pw_gid}

    def start(self) -> Postgres:
        self.port = self.port or free_port()
        who = self._as_postgres_user()
        subprocess.run(
            [
                pg_bin("initdb"),
                "-D",
                str(self.data),
                "-U",
                self.user,
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
            ],
            check=True,
            capture_output=True,
            **who,
        )
        log = open(self.workdir / "postgres.log", "ab")  # noqa: SIM115 - handed to the child
        self.process = subprocess.Popen(
            [
                pg_bin("postgres"),
                "-D",
                str(self.data),
                "-p",
                str(self.port),
                "-h",
                "127.0.0.1",
                "-k",
                str(self.workdir),
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=200",
                "-c",
                "log_min_messages=warning",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            **who,
        )
        log.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"postgres exited:\n{(self.workdir / 'postgres.log').read_text()}")
            ready = subprocess.run(
                [pg_bin("pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user],
                capture_output=True,
                check=False,
            )
            if ready.returncode == 0:
                return self
            time.sleep(0.1)
        raise TimeoutError("postgres did not accept connections within 30s")

    def psql(self, sql: str, database: str = "postgres") -> str:
        out = subprocess.run(
            [
                pg_bin("psql"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                self.user,
                "-d",
                database,
                "-v",
                "ON_ERROR_STOP=1",
                "-At",
                "-c",
                sql,
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        return out.stdout

    def create_database(self, name: str) -> str:
        self.psql(f'CREATE DATABASE "{name}"')
        self.databases.append(name)
        return self.dsn(name)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGINT)  # fast shutdown
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        shutil.rmtree(self.workdir, ignore_errors=True)


if __name__ == "__main__":
    with Postgres.create() as pg:
        print(pg.dsn(pg.create_database("todo")), flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()
    sys.exit(0)
