"""Entrypoint of the todo-kafka image: a single-node Apache Kafka (KRaft) for the local cluster.

One JVM is broker and controller. Clients get one listener, SASL_SSL on port 9093 with
SCRAM-SHA-256 (what charts/todo/dapr/pubsub.yaml uses: authType password, SHA-256, TLS on);
the controller listens on 127.0.0.1:9094 (PLAINTEXT, inside the pod only). testkit/kafka.py,
the test harness's broker, runs with the settings of `server_properties` below.

The contract (what a pod gives the image):
- /etc/todo-kafka/tls/tls.crt and tls.key: the broker's certificate (PEM, chain allowed) and
  its key, unencrypted PKCS#8 ("BEGIN PRIVATE KEY": cert-manager's `privateKey.encoding:
  PKCS8`), as a kubernetes.io/tls Secret mounts them; an optional ca.crt is the trust store
  of the broker's own client connections. The certificate names KAFKA_ADVERTISED_HOST.
- /etc/todo-kafka/users/<name>: one file per SCRAM-SHA-256 user, its content the password
  ([A-Za-z0-9._~-], a trailing newline is ignored). `admin` is required: the broker's own
  identity between its listeners. The users are written into the cluster's metadata when
  the storage is formatted, i.e. on an empty /var/lib/kafka/data; later changes to the files
  are not applied (a new volume is).
- /var/lib/kafka/data: the data volume, writable by uid 1001 (fsGroup 1001); the log
  folders live in its `kraft` folder.
- /tmp: writable (an emptyDir with a read-only root filesystem): the broker's configuration
  (which holds the admin password) and key store go to a private folder there, mode 0700.
- KAFKA_ADVERTISED_HOST (required): the name clients reach the broker by (the Service's DNS
  name); KAFKA_ADVERTISED_PORT: the port they reach it on (default 9093, the listener's).
- KAFKA_HEAP: the JVM's heap options (default "-Xmx384m -Xms384m").
- Container arguments go to kafka.Kafka after the properties file: `--override name=value`.
- `entrypoint.py topics NAME:PARTITIONS ...` (exec'd in the running container) creates the
  topics that do not exist yet, as the admin; it needs tls/ca.crt (the broker's CA).
- SIGTERM: Kafka's controlled shutdown (the JVM runs as this process's child, which forwards
  the signals and exits with its code, 143). Readiness: a TCP connection to port 9093.
No password is put on a command line, in the environment or in a log line: the storage tool
reads its arguments from a file (java @file), and Kafka logs password settings as [hidden].
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

HOME = Path("/opt/kafka")
LIBS = HOME / "libs"
LOG4J2 = HOME / "log4j2.properties"
TLS = Path("/etc/todo-kafka/tls")
USERS = Path("/etc/todo-kafka/users")
DATA = Path("/var/lib/kafka/data")
LOG_DIR = DATA / "kraft"
PORT = 9093
CONTROLLER_PORT = 9094
ADMIN = "admin"
SCRAM = "SCRAM-SHA-256"
NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,63}")
# Safe inside `--add-scram SCRAM-SHA-256=[name=...,password=...]` and a JAAS string unquoted.
PASSWORD = re.compile(r"[A-Za-z0-9._~-]{8,}")
PKCS8 = "-----BEGIN PRIVATE KEY-----"
DEFAULT_HEAP = "-Xmx384m -Xms384m"
# The broker's JVM options besides its heap and logging (testkit/kafka.py's broker uses them too).
JVM = [
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-Xshare:auto",
    "-Djava.awt.headless=true",
]
FORWARD = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)
# Short-lived JVMs (the storage tool) start faster with the C1 compiler only.
TOOL_JVM = ["-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Xshare:auto"]


def say(message: str) -> None:
    print(f"todo-kafka: {message}", file=sys.stderr, flush=True)


def fail(message: str) -> SystemExit:
    return SystemExit(f"todo-kafka: {message}")


def read_users() -> dict[str, str]:
    """name -> password, from the files in USERS (a Secret volume's ..data links are skipped)."""
    users = {}
    for entry in sorted(USERS.iterdir()) if USERS.is_dir() else []:
        if entry.name.startswith(".") or not entry.is_file():
            continue
        if not NAME.fullmatch(entry.name):
            raise fail(f"{entry}: not a user name this image takes ([A-Za-z0-9._-])")
        password = entry.read_text().rstrip("\r\n")
        if not PASSWORD.fullmatch(password):
            raise fail(f"{entry}: the password must be 8 or more of [A-Za-z0-9._~-]")
        users[entry.name] = password
    if ADMIN not in users:
        raise fail(f"no {USERS / ADMIN}: the broker's own user is required")
    return users


def write_tls(folder: Path) -> dict[str, str]:
    """Kafka's PEM key store (the key, then the chain), and the trust store when ca.crt is given."""
    key, cert = TLS / "tls.key", TLS / "tls.crt"
    for path in (key, cert):
        if not path.is_file():
            raise fail(f"no {path}: mount the broker's certificate Secret at {TLS}")
    key_pem = key.read_text()
    if PKCS8 not in key_pem:
        raise fail(f"{key} is not an unencrypted PKCS#8 key ({PKCS8}): cert-manager's encoding PKCS8")
    keystore = folder / "broker.pem"
    keystore.write_text(key_pem.strip() + "\n" + cert.read_text().strip() + "\n")
    props = {"ssl.keystore.type": "PEM", "ssl.keystore.location": str(keystore)}
    if (TLS / "ca.crt").is_file():
        props["ssl.truststore.type"] = "PEM"
        props["ssl.truststore.location"] = str(TLS / "ca.crt")
    return props


def server_properties(
    *,
    listen: str,
    advertise: str,
    controller_port: int,
    admin: str,
    admin_password: str,
    tls: dict[str, str],
    log_dir: Path,
) -> dict[str, str]:
    """A single-node KRaft broker: SASL_SSL (SCRAM) for clients on `listen` (host:port, an empty
    host for every interface), advertised as `advertise`; the quorum on loopback, PLAINTEXT.
    testkit/kafka.py, the tests' broker, starts from these same settings."""
    jaas = (
        "org.apache.kafka.common.security.scram.ScramLoginModule required "
        f'username="{admin}" password="{admin_password}";'
    )
    return {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@127.0.0.1:{controller_port}",
        "listeners": f"SASL_SSL://{listen},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"SASL_SSL://{advertise}",
        "listener.security.protocol.map": "SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT",
        "controller.listener.names": "CONTROLLER",
        # Kafka wants an inter-broker listener among the advertised ones. With one node
        # nothing replicates, but whatever connects there authenticates as the admin (SCRAM).
        "inter.broker.listener.name": "SASL_SSL",
        "sasl.enabled.mechanisms": SCRAM,
        "sasl.mechanism.inter.broker.protocol": SCRAM,
        "listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config": jaas,
        **tls,
        "ssl.client.auth": "none",
        "log.dirs": str(log_dir),
        # Like Redpanda Cloud: topics are created, not made on first use.
        "auto.create.topics.enable": "false",
        "num.partitions": "1",
        "default.replication.factor": "1",
        "min.insync.replicas": "1",
        # Internal topics: one replica (one node), few partitions (a fast first group join).
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "4",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "4",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "share.coordinator.state.topic.num.partitions": "1",
        "group.initial.rebalance.delay.ms": "0",
        # A restarted node waits for its previous registration's session to expire (default
        # 9 s): keep it short.
        "broker.heartbeat.interval.ms": "500",
        "broker.session.timeout.ms": "3000",
    }


def write_private(path: Path, text: str) -> None:
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as handle:
        handle.write(text)


def format_storage(folder: Path, config: Path, users: dict[str, str]) -> None:
    """`kafka-storage format` with the SCRAM users, its arguments from a private file."""
    cluster_id = base64.urlsafe_b64encode(os.urandom(16)).decode()[:22]
    # One argument: a random id starts with "-" one time in 64, and would be read as an option.
    arguments = ["kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}", "--config", str(config)]
    for name, password in users.items():
        arguments += ["--add-scram", f"{SCRAM}=[name={name},password={password}]"]
    argfile = folder / "format.args"
    write_private(argfile, "\n".join(arguments) + "\n")
    try:
        run = subprocess.run(
            ["java", *TOOL_JVM, f"-Dlog4j2.configurationFile={LOG4J2}", "-cp", f"{LIBS}/*", f"@{argfile}"],
            capture_output=True,
            text=True,
            check=False,
        )
    finally:
        argfile.unlink()
    if run.returncode:
        output = run.stdout + run.stderr
        for password in users.values():
            output = output.replace(password, "***")
        raise fail(f"formatting the storage failed ({run.returncode}):\n{output[-4000:]}")
    say(f"formatted {LOG_DIR} (cluster {cluster_id}) with the SCRAM users {', '.join(users)}")


def main() -> int:
    host = os.environ.get("KAFKA_ADVERTISED_HOST", "")
    if not host:
        raise fail("KAFKA_ADVERTISED_HOST is required: the name clients reach the broker by")
    port = int(os.environ.get("KAFKA_ADVERTISED_PORT") or PORT)
    heap = (os.environ.get("KAFKA_HEAP") or DEFAULT_HEAP).split()
    if not os.access(DATA, os.W_OK):
        raise fail(f"{DATA} is not writable by uid {os.getuid()} (fsGroup?)")
    users = read_users()
    # A restarted container finds its previous folder in the pod's /tmp (an emptyDir outlives it).
    for stale in Path(tempfile.gettempdir()).glob("todo-kafka-*"):
        shutil.rmtree(stale, ignore_errors=True)
    folder = Path(tempfile.mkdtemp(prefix="todo-kafka-"))  # mode 0700
    tls = write_tls(folder)
    config = folder / "server.properties"
    props = server_properties(
        listen=f":{PORT}",
        advertise=f"{host}:{port}",
        controller_port=CONTROLLER_PORT,
        admin=ADMIN,
        admin_password=users[ADMIN],
        tls=tls,
        log_dir=LOG_DIR,
    )
    write_private(config, "".join(f"{key}={value}\n" for key, value in props.items()))
    if (LOG_DIR / "meta.properties").is_file():
        say(f"{LOG_DIR} is formatted: its SCRAM users stay as they are")
    else:
        format_storage(folder, config, users)
    say(f"starting the broker: SASL_SSL on port {PORT}, advertised as {host}:{port}")
    java = ["java", *heap, *JVM, f"-Dlog4j2.configurationFile={LOG4J2}", "-cp", f"{LIBS}/*"]
    return run_broker([*java, "kafka.Kafka", str(config), *sys.argv[1:]])


def ensure_topics(specs: list[str]) -> int:
    """`entrypoint.py topics NAME:PARTITIONS ...`, run in the broker's container: create the
    topics that do not exist yet (Kafka's TopicCommand, as the admin, over the listener); print
    `created NAME` for each one it made."""
    wanted = {}
    for spec in specs:
        name, _, partitions = spec.partition(":")
        if not NAME.fullmatch(name) or not partitions.isdigit():
            raise fail(f"{spec!r}: topics are given as NAME:PARTITIONS")
        wanted[name] = partitions
    users = read_users()
    folder = Path(tempfile.mkdtemp(prefix="todo-kafka-topics-"))
    try:
        config = folder / "admin.properties"
        jaas = (
            "org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="{ADMIN}" password="{users[ADMIN]}";'
        )
        client = {
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": SCRAM,
            "sasl.jaas.config": jaas,
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(TLS / "ca.crt"),
        }
        write_private(config, "".join(f"{key}={value}\n" for key, value in client.items()))
        command = ["java", *TOOL_JVM, f"-Dlog4j2.configurationFile={LOG4J2}", "-cp", f"{LIBS}/*"]
        command += ["org.apache.kafka.tools.TopicCommand", "--bootstrap-server", f"localhost:{PORT}"]
        command += ["--command-config", str(config)]

        def topic_command(*args: str) -> str:
            run = subprocess.run([*command, *args], capture_output=True, text=True, check=False)
            if run.returncode:
                output = (run.stdout + run.stderr)[-4000:]
                raise fail(f"kafka-topics {args[0]} failed ({run.returncode}):\n{output}")
            return run.stdout

        existing = set(topic_command("--list").split())
        for name, partitions in wanted.items():
            if name not in existing:
                topic_command("--create", "--if-not-exists", "--topic", name, "--partitions", partitions)
                print(f"created {name}", flush=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


RUNNING: dict[str, subprocess.Popen] = {}  # "broker", once it runs


def on_signal(signum: int, _frame) -> None:
    if "broker" not in RUNNING:
        raise SystemExit(128 + signum)
    RUNNING["broker"].send_signal(signum)


def run_broker(argv: list[str]) -> int:
    """The JVM as this process's child, the signals forwarded (SIGTERM: Kafka's controlled
    shutdown; SIGQUIT: a thread dump); its exit code is ours (143 after SIGTERM)."""
    broker = RUNNING["broker"] = subprocess.Popen(argv)
    while True:
        pid, status = os.waitpid(-1, 0)  # reaps orphans too: this is the container's init
        if pid == broker.pid:
            code = os.waitstatus_to_exitcode(status)
            return 128 - code if code < 0 else code


if __name__ == "__main__":
    if sys.argv[1:2] == ["topics"]:
        sys.exit(ensure_topics(sys.argv[2:]))
    for forwarded in FORWARD:
        signal.signal(forwarded, on_signal)
    sys.exit(main())
