"""Entrypoint of the todo-postgres image: PostgreSQL for the local single-node cluster.

The contract (what a pod gives the image):
- /var/lib/postgresql/data: the data volume, writable by uid 999 (fsGroup 999). The cluster
  lives in its `pgdata` folder, so a volume's own entries (lost+found) and its root's owner
  and mode do not matter. An empty volume gets `initdb` (UTF8, C.UTF-8); the superuser is
  `postgres`, with no password.
- /etc/todo-postgres/users/<name>: one file per user, its content the password (printable
  ASCII; a trailing newline is ignored), e.g. a Secret mounted there. At every start each user
  exists with that password (a SCRAM-SHA-256 verifier computed here, so the password is never
  sent to the server, written to a log or put in the environment), owns the database <name>,
  and is the only non-superuser allowed to connect to it. A changed file is applied at the
  next start; a removed file removes nothing.
- /var/run/postgresql: the server's socket folder, writable by uid 999 (with a read-only root
  filesystem: an emptyDir).
- Port 5432 on every address (0.0.0.0); pg_hba: the socket trusts the superuser only, TCP wants
  scram-sha-256 from every other user (the superuser is refused there).
- Container arguments are added to the server's command line (`-c name=value`).
- SIGTERM (and SIGINT) stop the server with a fast shutdown; SIGQUIT an immediate one; SIGHUP
  reloads its configuration. The server is a child of this process, which also reaps orphans.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
import signal
import subprocess
import sys
from pathlib import Path

VOLUME = Path("/var/lib/postgresql/data")
PGDATA = VOLUME / "pgdata"
SOCKETS = Path("/var/run/postgresql")
USERS = Path("/etc/todo-postgres/users")
SUPERUSER = "postgres"
PORT = "5432"
NAME = re.compile(r"[a-z_][a-z0-9_-]{0,62}")
SCRAM_ITERATIONS = 4096  # PostgreSQL's own default (scram_iterations)
HBA = f"""\
# Written by the todo-postgres entrypoint at every start: edits here are lost.
# TYPE  DATABASE  USER         ADDRESS    METHOD
local   all       {SUPERUSER:12} trust
local   all       all                     scram-sha-256
host    all       {SUPERUSER:12} 0.0.0.0/0  reject
host    all       {SUPERUSER:12} ::/0       reject
host    all       all          0.0.0.0/0  scram-sha-256
host    all       all          ::/0       scram-sha-256
"""
# Server settings on the command line (they win over postgresql.conf).
SETTINGS = {
    "listen_addresses": "*",  # every address: 0.0.0.0, and :: where the pod has IPv6
    "port": PORT,
    "unix_socket_directories": str(SOCKETS),
    "password_encryption": "scram-sha-256",
}
# What a signal to this process becomes for the server: SIGTERM is PostgreSQL's "smart"
# shutdown, which waits for every client to leave; a pod's stop wants the fast one.
FORWARD = {
    signal.SIGTERM: signal.SIGINT,
    signal.SIGINT: signal.SIGINT,
    signal.SIGQUIT: signal.SIGQUIT,
    signal.SIGHUP: signal.SIGHUP,
}


class Stop(Exception):
    """A stop signal arrived before the server took over."""


def say(message: str) -> None:
    print(f"todo-postgres: {message}", file=sys.stderr, flush=True)


def read_users() -> dict[str, str]:
    """name -> password, from the files in USERS (a Secret volume's ..data links are skipped)."""
    if not USERS.is_dir():
        return {}
    users = {}
    for entry in sorted(USERS.iterdir()):
        if entry.name.startswith(".") or not entry.is_file():
            continue
        name = entry.name
        if not NAME.fullmatch(name) or name == SUPERUSER or name.startswith("pg_"):
            raise SystemExit(f"todo-postgres: {entry}: not a user name this image makes ([a-z_][a-z0-9_-]*)")
        password = entry.read_bytes().rstrip(b"\r\n")
        if not password or not password.isascii() or not password.decode().isprintable():
            raise SystemExit(f"todo-postgres: {entry}: the password must be printable ASCII, not empty")
        users[name] = password.decode()
    return users


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _keys(password: str, salt: bytes, iterations: int) -> tuple[bytes, bytes]:
    """(StoredKey, ServerKey) of RFC 5802. PostgreSQL's SASLprep leaves ASCII as it is."""
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()
    return hashlib.sha256(client_key).digest(), server_key


def scram_verifier(password: str) -> str:
    salt = secrets.token_bytes(16)
    stored, server = _keys(password, salt, SCRAM_ITERATIONS)
    return f"SCRAM-SHA-256${SCRAM_ITERATIONS}:{_b64(salt)}${_b64(stored)}:{_b64(server)}"


def verifies(password: str, verifier: str) -> bool:
    """Whether a stored SCRAM-SHA-256 verifier is the one of this password."""
    match = re.fullmatch(r"SCRAM-SHA-256\$(\d+):([^$]+)\$([^:]+):(.+)", verifier or "")
    if not match:
        return False
    iterations, salt, stored, server = match.groups()
    want = _keys(password, base64.b64decode(salt), int(iterations))
    return hmac.compare_digest(want[0] + want[1], base64.b64decode(stored) + base64.b64decode(server))


def initdb() -> None:
    """Create the cluster in a fresh folder, renamed into place when complete."""
    staging = VOLUME / "pgdata.init"
    if staging.exists():
        subprocess.run(["rm", "-rf", str(staging)], check=True)
    say(f"empty data volume: initdb into {PGDATA}")
    subprocess.run(
        [
            "initdb",
            f"--pgdata={staging}",
            f"--username={SUPERUSER}",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--encoding=UTF8",
            "--locale=C.UTF-8",
            "--no-instructions",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    staging.rename(PGDATA)


def psql(script: str, *options: str) -> str:
    """psql as the superuser over the socket, the script on stdin (never on a command line)."""
    result = subprocess.run(
        [
            "psql",
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            str(SOCKETS),
            "-U",
            SUPERUSER,
            "-d",
            "postgres",
            *options,
        ],
        input=script,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode:
        # psql echoes no statement text on error; the server's message names no password.
        raise SystemExit(f"todo-postgres: psql failed ({result.returncode}): {result.stderr.strip()}")
    return result.stdout


def ensure_users(users: dict[str, str]) -> None:
    """Each user with its password, owning its database, the only non-superuser let in."""
    if not users:
        say(f"no users in {USERS}")
        return
    rows = psql("SELECT rolname, coalesce(rolpassword, '') FROM pg_authid;\n", "-A", "-t", "-F", "\t")
    stored = dict(line.split("\t", 1) for line in rows.splitlines() if "\t" in line)
    statements = []
    for name, password in users.items():
        statements.append(f"\\set name '{name}'")
        if name not in stored:
            statements.append('CREATE ROLE :"name" LOGIN;')
            state = "created"
        elif verifies(password, stored[name]):
            state = "password unchanged"
        else:
            state = "password changed"
        if state != "password unchanged":
            # A verifier, not the password: the server never sees the password itself.
            statements.append(f"\\set verifier '{scram_verifier(password)}'")
            statements.append("ALTER ROLE :\"name\" WITH LOGIN PASSWORD :'verifier';")
        statements += [
            "SELECT format('CREATE DATABASE %I OWNER %I', :'name', :'name')"
            " WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'name') \\gexec",
            'ALTER DATABASE :"name" OWNER TO :"name";',
            'REVOKE CONNECT, TEMPORARY ON DATABASE :"name" FROM PUBLIC;',
        ]
        say(f"user {name}: {state}; owns database {name}")
    psql("\n".join(statements) + "\n")


def pg_ctl(*args: str) -> None:
    subprocess.run(["pg_ctl", f"--pgdata={PGDATA}", "--wait", "--timeout=120", *args], check=True)


def prepare() -> None:
    """initdb on an empty volume, pg_hba, then the users on a server reachable by socket only."""
    if not os.access(VOLUME, os.W_OK):
        raise SystemExit(f"todo-postgres: {VOLUME} is not writable by uid {os.getuid()} (fsGroup?)")
    if not os.access(SOCKETS, os.W_OK):
        raise SystemExit(f"todo-postgres: {SOCKETS} is not writable by uid {os.getuid()} (an emptyDir?)")
    if not (PGDATA / "PG_VERSION").is_file():
        if PGDATA.exists():
            raise SystemExit(f"todo-postgres: {PGDATA} exists without PG_VERSION: not a cluster; left alone")
        initdb()
    (PGDATA / "pg_hba.conf").write_text(HBA)
    users = read_users()
    options = f"-c listen_addresses='' -c unix_socket_directories='{SOCKETS}'"
    pg_ctl("--silent", f"--options={options}", "start")
    try:
        ensure_users(users)
    finally:
        pg_ctl("--silent", "--mode=fast", "stop")


def serve(extra: list[str]) -> int:
    """Run the server as a child (signals forwarded by `on_signal`); its exit code is ours."""
    argv = ["postgres", "-D", str(PGDATA)]
    for name, value in SETTINGS.items():
        argv += ["-c", f"{name}={value}"]
    server = RUNNING["server"] = subprocess.Popen([*argv, *extra])
    say(f"serving on port {PORT} (pid {server.pid})")
    while True:
        pid, status = os.waitpid(-1, 0)  # reaps orphans too: this is the container's init
        if pid == server.pid:
            code = os.waitstatus_to_exitcode(status)
            return 128 - code if code < 0 else code


RUNNING: dict[str, subprocess.Popen] = {}  # "server", once it runs


def on_signal(signum: int, _frame) -> None:
    if "server" not in RUNNING:
        raise Stop(signum)
    RUNNING["server"].send_signal(FORWARD[signum])


def main() -> int:
    for received in FORWARD:
        signal.signal(received, on_signal)
    try:
        prepare()
    except Stop as stopped:
        say(f"signal {stopped.args[0]} before the server started: exiting")
        return 128 + int(stopped.args[0])
    return serve(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
