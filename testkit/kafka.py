"""A real Apache Kafka broker for tests, reached the way the app reaches Redpanda Cloud.

One JVM runs a single-node KRaft cluster (broker and controller combined) from the jars
scripts/kafka_jars.py fetches from Maven Central (KAFKA_VERSION in versions.env). Clients
get one listener, SASL_SSL on 127.0.0.1 with SCRAM-SHA-256, behind a certificate from a
test CA (SAN 127.0.0.1 and localhost): what Dapr's pubsub.kafka uses in production with
`authType: password`, `saslMechanism: SHA-256` and TLS on. The quorum talks PLAINTEXT on a
second loopback port that clients are never told about. Like Redpanda Cloud, topics are not
created on first use (pass `auto_create_topics=True` to change that).

    with Kafka.create() as kafka:
        kafka.create_topic("todo.events", partitions=3)
        producer = confluent_kafka.Producer(kafka.client_config())
        # kafka.bootstrap, kafka.username, kafka.password, kafka.ca_file, kafka.ca_pem

`stop_broker()` / `start_broker()` simulate an outage: the JVM goes away and comes back on
the same ports with the same data. Everything lives in a private temporary folder (on
/dev/shm when it is writable); `stop()`, also run at interpreter exit, kills the JVM's
process group and removes the folder. A broker whose owning process died is reaped by the
next `Kafka.create()`.

Start-up: about 5-8 s warm (storage format ~1.5 s, broker ~4-6 s); the first start on a
machine also fetches the jars (~45 s) and, when that broker stops, writes a class-data-sharing
archive next to them that saves 1-2 s on every later start. TODO_KEEP_KAFKA=1 keeps the folder
(server.properties, kafka.log) after `stop()` for a post-mortem.

`python -m testkit.kafka` starts one and prints how to connect (Ctrl-C stops it).
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import datetime as dt
import hashlib
import importlib.util
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import kafka_jars

from testkit.pki import server_pki
from testkit.procs import alive, free_port, kill_groups, reap_orphans

ROOT = Path(__file__).resolve().parent.parent
# The local cluster's broker image: its entrypoint holds the settings both brokers share.
BROKER_IMAGE_DIR = ROOT / "platform-images" / "kafka"
_spec = importlib.util.spec_from_file_location("kafka_entrypoint", BROKER_IMAGE_DIR / "entrypoint.py")
BROKER_IMAGE = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(BROKER_IMAGE)

STATE_FILE = "state.json"
SCRAM = BROKER_IMAGE.SCRAM
STANDARD_AUTHORIZER = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
LOG4J2 = BROKER_IMAGE_DIR / "log4j2.properties"  # everything to the console, as in the image

log = logging.getLogger(__name__)


def make_pki(folder: Path) -> None:
    """ca.pem (the test CA) and broker.pem (the broker's key and certificate chain, PEM keystore)."""
    pki = server_pki("todo-test-kafka-ca", "kafka-broker")
    (folder / "ca.pem").write_bytes(pki.ca_pem)
    keystore = folder / "broker.pem"  # Kafka's PEM keystore: the PKCS#8 key, then the chain
    keystore.write_bytes(pki.key_pem + pki.cert_pem + pki.ca_pem)
    keystore.chmod(0o600)


def _secret() -> str:
    # Hex: safe inside `--add-scram name=...,password=...` and a JAAS string, no quoting.
    return secrets.token_hex(16)


@dataclass
class Kafka:
    """One single-node KRaft cluster. `with Kafka.create() as kafka:` or `start()` / `stop()`."""

    workdir: Path
    port: int = 0  # SASL_SSL, for clients
    controller_port: int = 0  # PLAINTEXT, the KRaft quorum only
    username: str = "todo"
    password: str = field(default_factory=_secret)
    admin_username: str = "admin"  # a super user when the authorizer is on; the broker's own identity
    admin_password: str = field(default_factory=_secret)
    auto_create_topics: bool = False  # Redpanda Cloud's default
    authorizer: bool = False  # True: StandardAuthorizer, ACLs enforced, only the admin is a super user
    heap: str = "512m"
    process: subprocess.Popen | None = None
    cluster_id: str = field(default_factory=lambda: base64.urlsafe_b64encode(os.urandom(16)).decode()[:22])
    timings: dict[str, float] = field(default_factory=dict)
    libs: Path | None = None
    _owned_dir: bool = False
    _cds_dump: Path | None = None

    @classmethod
    def create(cls, parent: str | None = None, **options) -> Kafka:
        shm = "/dev/shm"  # noqa: S108 - a private mkdtemp folder on tmpfs
        base = parent or (shm if os.access(shm, os.W_OK) else None)
        reap_orphans(Path(base or tempfile.gettempdir()), "todo-kafka-*")
        workdir = Path(tempfile.mkdtemp(prefix="todo-kafka-", dir=base))
        return cls(workdir=workdir, _owned_dir=True, **options)

    def __enter__(self) -> Kafka:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- what clients need -------------------------------------------------------------------
    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def ca_file(self) -> Path:
        return self.workdir / "ca.pem"

    @property
    def ca_pem(self) -> str:
        return self.ca_file.read_text()

    @property
    def log_file(self) -> Path:
        return self.workdir / "kafka.log"

    def client_config(self, username: str | None = None, password: str | None = None, **extra) -> dict:
        """confluent-kafka (librdkafka) settings for the app's user: SASL_SSL, SCRAM-SHA-256, CA verified."""
        return {
            "bootstrap.servers": self.bootstrap,
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": SCRAM,
            "sasl.username": username or self.username,
            "sasl.password": password or self.password,
            "ssl.ca.location": str(self.ca_file),
            "ssl.endpoint.identification.algorithm": "https",
            **extra,
        }

    def admin_config(self, **extra) -> dict:
        return self.client_config(self.admin_username, self.admin_password, **extra)

    # -- lifecycle ---------------------------------------------------------------------------
    def _java(self) -> str:
        home = os.environ.get("JAVA_HOME")
        java = str(Path(home) / "bin" / "java") if home else shutil.which("java")
        if not java or not Path(java).exists():
            raise FileNotFoundError(
                "java not found: install openjdk-17-jre-headless (scripts/system-deps.sh)"
            )
        return java

    def _say(self, message: str) -> None:
        print(f"kafka: {message}", file=sys.stderr, flush=True)

    def start(self) -> Kafka:
        t0 = time.monotonic()
        self.libs = kafka_jars.ensure()  # progress on stderr only when it fetches
        self.timings["jars"] = time.monotonic() - t0
        atexit.register(self.stop)
        self.port = self.port or free_port()
        self.controller_port = self.controller_port or free_port()
        make_pki(self.workdir)
        self._write_config()
        self._format()
        self.timings["format"] = time.monotonic() - t0
        self.start_broker()
        self.timings["ready"] = time.monotonic() - t0
        version, took = kafka_jars.read_versions()["KAFKA_VERSION"], self.timings
        self._say(
            f"Kafka {version} ready on {self.bootstrap} (SASL_SSL) in {took['ready']:.1f}s "
            f"(jars {took['jars']:.1f}s, format {took['format'] - took['jars']:.1f}s, "
            f"broker {took['broker']:.1f}s)"
        )
        return self

    def _write_config(self) -> None:
        props = BROKER_IMAGE.server_properties(
            listen=f"127.0.0.1:{self.port}",
            advertise=f"127.0.0.1:{self.port}",
            controller_port=self.controller_port,
            admin=self.admin_username,
            admin_password=self.admin_password,
            tls={
                "ssl.keystore.type": "PEM",
                "ssl.keystore.location": str(self.workdir / "broker.pem"),
                "ssl.truststore.type": "PEM",
                "ssl.truststore.location": str(self.ca_file),
            },
            log_dir=self.workdir / "data",
        )
        props["auto.create.topics.enable"] = str(self.auto_create_topics).lower()
        if self.authorizer:
            # The controller listener is PLAINTEXT (principal ANONYMOUS) and only on loopback;
            # the broker's registration and heartbeats arrive there and need CLUSTER_ACTION.
            props["authorizer.class.name"] = STANDARD_AUTHORIZER
            props["super.users"] = f"User:{self.admin_username};User:ANONYMOUS"
            props["allow.everyone.if.no.acl.found"] = "false"
        path = self.workdir / "server.properties"
        path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        path.chmod(0o600)

    def _classpath(self) -> str:
        return f"{self.libs}/*"

    def _cds_archive(self) -> Path:
        """A class-data-sharing archive of the broker's classes, next to the cached jars.

        It saves a second or two of every start. The first broker to stop cleanly writes it
        (-XX:ArchiveClassesAtExit); it is keyed by the JVM build, and a JVM that cannot use it
        ignores it (-Xshare:auto).
        """
        java = Path(self._java()).resolve()
        stat = java.stat()
        key = hashlib.sha256(f"{java}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
        return self.libs.parent / f"broker-cds-{key}.jsa"

    def _format(self) -> None:
        """`kafka-storage format`, adding the SCRAM users to the cluster's first metadata."""
        argv = [
            self._java(),
            *BROKER_IMAGE.TOOL_JVM,
            f"-Dlog4j2.configurationFile={LOG4J2}",
            "-cp",
            self._classpath(),
            "kafka.tools.StorageTool",
            "format",
            # One argument: a random id starts with "-" one time in 64, and would be read as an option.
            f"--cluster-id={self.cluster_id}",
            "--config",
            str(self.workdir / "server.properties"),
            "--add-scram",
            f"{SCRAM}=[name={self.username},password={self.password}]",
            "--add-scram",
            f"{SCRAM}=[name={self.admin_username},password={self.admin_password}]",
        ]
        run = subprocess.run(argv, capture_output=True, text=True, cwd=self.workdir, check=False)
        if run.returncode:
            output = (
                (run.stdout + run.stderr).replace(self.password, "***").replace(self.admin_password, "***")
            )
            raise RuntimeError(f"kafka-storage format failed ({run.returncode}):\n{output[-4000:]}")

    def start_broker(self, timeout: float = 90) -> None:
        """Start the JVM (again, after `stop_broker()`: same ports, same data) and wait until it serves."""
        if self.process and self.process.poll() is None:
            return
        started = time.monotonic()
        archive = self._cds_archive()
        if archive.is_file():
            cds, self._cds_dump = [f"-XX:SharedArchiveFile={archive}"], None
        else:
            for stale in archive.parent.glob(f"{archive.name}.tmp*"):  # from runs that died
                if not alive(int(stale.suffix[4:] or 0)):
                    stale.unlink(missing_ok=True)
            self._cds_dump = archive.with_name(f"{archive.name}.tmp{os.getpid()}")
            cds = [f"-XX:ArchiveClassesAtExit={self._cds_dump}"]
        argv = [
            self._java(),
            f"-Xmx{self.heap}",
            f"-Xms{self.heap}",
            *cds,
            *BROKER_IMAGE.JVM,
            f"-Dlog4j2.configurationFile={LOG4J2}",
            f"-Dkafka.logs.dir={self.workdir}",
            "-cp",
            self._classpath(),
            "kafka.Kafka",
            str(self.workdir / "server.properties"),
        ]
        with open(self.log_file, "ab") as out:
            out.write(f"\n===== testkit: starting broker at {dt.datetime.now(dt.UTC).isoformat()}\n".encode())
            out.flush()
            self.process = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd=self.workdir,
            )
        self._save_state()
        self._say(f"starting the broker (KRaft, node 1) on {self.bootstrap}; log {self.log_file}")
        self._wait_ready(timeout)
        self.timings["broker"] = time.monotonic() - started
        self._say(f"broker serving after {self.timings['broker']:.1f}s")

    def _wait_ready(self, timeout: float) -> None:
        """Ready: the SASL_SSL port answers an authenticated metadata request from the admin."""
        from confluent_kafka.admin import AdminClient

        deadline = time.monotonic() + timeout
        last = "the port is not open yet"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the Kafka broker exited with {self.process.returncode}:\n{self.tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    pass
            except OSError:
                time.sleep(0.1)
                continue
            admin = AdminClient(self.admin_config(logger=log))
            try:
                brokers = admin.list_topics(timeout=5).brokers
                if brokers:
                    return
                last = "metadata without brokers"
            except Exception as exc:
                last = str(exc)
            time.sleep(0.2)
        raise TimeoutError(f"Kafka not ready after {timeout:.0f}s ({last}):\n{self.tail()}")

    def tail(self, lines: int = 40) -> str:
        if not self.log_file.exists():
            return ""
        return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])

    def stop_broker(self, kill: bool = False) -> None:
        """Stop the JVM, keeping its data: a clean shutdown, or `kill=True` for a crash (SIGKILL)."""
        if self.process is None:
            return
        if kill:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            clean = False
        else:
            clean = kill_groups([self.process.pid], grace=20)
        self.process.wait()
        if self._cds_dump:
            if clean and self._cds_dump.is_file() and not self._cds_archive().exists():
                self._cds_dump.rename(self._cds_archive())
            self._cds_dump.unlink(missing_ok=True)
            self._cds_dump = None
        # Anything else left in its group (there should be nothing) goes too.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process = None
        self._save_state()

    def stop(self) -> None:
        self.stop_broker()
        atexit.unregister(self.stop)
        if self._owned_dir and not os.environ.get("TODO_KEEP_KAFKA"):
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _save_state(self) -> None:
        state = {"owner": os.getpid(), "pids": [self.process.pid] if self.process else []}
        (self.workdir / STATE_FILE).write_text(json.dumps(state))

    # -- helpers for tests -------------------------------------------------------------------
    def admin(self):
        from confluent_kafka.admin import AdminClient

        return AdminClient(self.admin_config(logger=log))

    def create_topic(
        self, name: str, partitions: int = 1, config: dict[str, str] | None = None, timeout: float = 30
    ) -> str:
        """Create a topic (as the admin) and wait until every partition has a leader."""
        from confluent_kafka.admin import NewTopic

        admin = self.admin()
        futures = admin.create_topics(
            [NewTopic(name, num_partitions=partitions, replication_factor=1, config=config or {})],
            operation_timeout=timeout,
        )
        futures[name].result(timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            topic = admin.list_topics(name, timeout=5).topics.get(name)
            led = topic and not topic.error and len(topic.partitions) == partitions
            if led and all(p.leader >= 0 for p in topic.partitions.values()):
                return name
            time.sleep(0.1)
        raise TimeoutError(f"topic {name}: partitions without a leader after {timeout:.0f}s")

    def allow(
        self, resource: str, name: str, operation: str, username: str | None = None, prefixed: bool = False
    ) -> None:
        """Grant an ACL (authorizer mode), e.g. `allow("TOPIC", "todo.", "WRITE", prefixed=True)`.

        resource: TOPIC, GROUP, CLUSTER or TRANSACTIONAL_ID; operation: READ, WRITE, DESCRIBE,
        CREATE, ALL, ...; the principal is `User:<username>` (default: the app's user).
        """
        from confluent_kafka.admin import (
            AclBinding,
            AclOperation,
            AclPermissionType,
            ResourcePatternType,
            ResourceType,
        )

        binding = AclBinding(
            ResourceType[resource.upper()],
            name,
            ResourcePatternType.PREFIXED if prefixed else ResourcePatternType.LITERAL,
            f"User:{username or self.username}",
            "*",
            AclOperation[operation.upper()],
            AclPermissionType.ALLOW,
        )
        admin = self.admin()  # referenced until the future resolves: a destroyed client fails it
        admin.create_acls([binding], request_timeout=30)[binding].result(30)

    def delete_topic(self, name: str, timeout: float = 30) -> None:
        admin = self.admin()
        admin.delete_topics([name], operation_timeout=timeout)[name].result(timeout)


def main() -> int:
    # Ctrl-C, or SIGTERM from a supervisor, stops the broker and removes its folder.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with Kafka.create() as kafka:
        props = kafka.workdir / "client.properties"
        props.write_text(
            f"bootstrap.servers={kafka.bootstrap}\nsecurity.protocol=SASL_SSL\nsasl.mechanism={SCRAM}\n"
            f"sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="{kafka.username}" password="{kafka.password}";\n'
            f"ssl.truststore.type=PEM\nssl.truststore.location={kafka.ca_file}\n"
        )
        props.chmod(0o600)
        print(f"bootstrap: {kafka.bootstrap} (SASL_SSL, {SCRAM}, user {kafka.username})", flush=True)
        print(f"CA: {kafka.ca_file}\nclient settings (with the password): {props}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()
    return 0


if __name__ == "__main__":
    sys.exit(main())
