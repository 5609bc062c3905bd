"""The local cluster's platform images (platform-images/*/Dockerfile, `make platform-images`): PostgreSQL,
Kafka, daprd and the Dapr scheduler, which `make up` runs next to the services.

Rung L0: the Dockerfiles, read statically (hadolint, the pins). Rung L3 for images: the real
images run with podman and runc (the container runtime of the local node, without kubelet),
hardened like a restricted pod (read-only root filesystem, the image's numeric user, no
capabilities) with what the pod gives them (volumes, Secret files, an emptyDir), and real
clients talk to them: asyncpg to PostgreSQL, confluent-kafka (librdkafka) to Kafka over
SASL_SSL. One container per engine for the module; readiness is polled with deadlines.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from confluent_kafka import Consumer, KafkaError, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from image_testlib import ROOT, RUN, Container, build_script, podman
from test_dockerfiles import arg_defaults, instructions

from testkit.pki import server_pki
from testkit.procs import free_port, http_status

VERSIONS = build_script.versions()
PLATFORM = build_script.PLATFORM
DAPR = VERSIONS["DAPR_VERSION"].removeprefix("v")
# A restricted pod: read-only root filesystem (no tmpfs but the ones given), no capabilities.
RESTRICTED = ["--read-only", "--read-only-tmpfs=false", "--cap-drop=ALL", "--security-opt=no-new-privileges"]
STOP_GRACE = 30  # Kubernetes' default terminationGracePeriodSeconds

# The first test to ask for `platform` builds the images: about a minute on a fresh machine.
pytestmark = pytest.mark.timeout(1800)


def dockerfile(name: str) -> Path:
    return ROOT / "platform-images" / name / "Dockerfile"


# --- rung L0: the Dockerfiles -------------------------------------------------------------------


@pytest.mark.unit
def test_l0_platform_dockerfiles_are_hadolint_clean_and_linted_by_make_lint():
    files = [dockerfile(name) for name in PLATFORM]
    assert all(path.is_file() for path in files)
    # `scripts/images.py lint` (make lint) checks every Dockerfile under images/
    assert set(ROOT.glob("platform-images/*/Dockerfile")) <= set(build_script.dockerfiles())
    hadolint = build_script.ensure_hadolint(VERSIONS)
    result = subprocess.run(
        [str(hadolint), "--no-color", "--failure-threshold", "style", "--format", "json", *map(str, files)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert json.loads(result.stdout or "[]") == [], result.stdout
    assert result.returncode == 0, result.stderr


@pytest.mark.unit
@pytest.mark.parametrize("name", PLATFORM)
def test_l0_platform_dockerfile_defaults_to_the_pins_and_a_numeric_user(name):
    items = instructions(dockerfile(name))
    defaults = arg_defaults(items)
    # the build passes the pins; a plain `podman build` of the file gets the same ones
    pins = build_script.platform_pins(VERSIONS)[name]
    assert {key: defaults.get(key) for key in pins} == pins
    assert defaults["PYTHON_BASE"] == VERSIONS["PYTHON_BASE_IMAGE"]
    declared = {rest.split("=", 1)[0] for keyword, rest in items if keyword == "ARG"}
    assert set(build_script.platform_build_args(VERSIONS, "base", name)) <= declared
    assert [rest for keyword, rest in items if keyword == "FROM"] == ["${PYTHON_BASE}"]
    user = [rest for keyword, rest in items if keyword == "USER"][-1]
    uid, gid = user.split(":")
    assert uid.isdigit() and gid.isdigit() and int(uid) > 0
    assert not [rest for keyword, rest in items if keyword == "ADD"]


@pytest.mark.unit
def test_l0_platform_refs_are_tagged_by_the_pins():
    expected = {
        "postgres": f"localhost/todo-postgres:{VERSIONS['POSTGRES_VERSION'].split('.')[0]}",
        "kafka": f"localhost/todo-kafka:{VERSIONS['KAFKA_VERSION']}",
        "daprd": f"localhost/todo-daprd:{DAPR}",
        "dapr-scheduler": f"localhost/todo-dapr-scheduler:{DAPR}",
    }
    refs = build_script.platform_refs(VERSIONS)
    assert {name: refs.get(name) for name in expected} == expected
    # the chart's explicit Dapr mode on the local cluster runs this daprd image
    local_values = (ROOT / "inventories" / "local" / "values" / "todo.yaml").read_text()
    assert f'image: {{repository: localhost/todo-daprd, tag: "{DAPR}"' in local_values


# --- rung L3 for images: the images run ---------------------------------------------------------


@pytest.fixture(scope="module")
def platform(pytestconfig) -> dict[str, str]:
    """name -> reference: `scripts/images.py build-platform` (what `make platform-images` runs)."""
    capture = pytestconfig.pluginmanager.getplugin("capturemanager")
    command = [sys.executable, str(ROOT / "scripts" / "images.py"), "build-platform", "--json"]
    last = ""
    started = time.monotonic()
    with capture.global_and_fixture_disabled():
        print("\nimages: building the platform images (scripts/images.py build-platform) ...", flush=True)
        with subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True) as proc:
            assert proc.stdout is not None
            for line in proc.stdout:
                print(line, end="", flush=True)
                last = line
        print(f"images: platform images ready in {time.monotonic() - started:.1f}s", flush=True)
    assert proc.returncode == 0, f"scripts/images.py build-platform failed (exit {proc.returncode})"
    built = json.loads(last)
    assert built == build_script.platform_refs(VERSIONS)
    return built


def secret_volume(folder: Path, files: dict[str, str | bytes]) -> Path:
    """A folder laid out like a Secret the kubelet mounts: the files (mode 0644) in a
    `..<timestamp>` folder, `..data` linking to it, and one link per key to `..data/<key>`. The
    parent (pytest's temporary folder, mode 0700) keeps them from the machine's other users."""
    data = folder / "..2026_01_01_00_00_00.000000001"
    data.mkdir(mode=0o755, parents=True)
    folder.chmod(0o755)
    (folder / "..data").symlink_to(data.name)
    for name, content in files.items():
        path = data / name
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        path.chmod(0o644)
        (folder / name).symlink_to(f"..data/{name}")
    return folder


class Engine:
    """A container and its named volume, removed at the end of the module."""

    def __init__(self, name: str) -> None:
        self.name = f"todo-test-{name}-{uuid.uuid4().hex[:8]}"
        self.volume = f"{self.name}-data"
        self.port = free_port()
        podman("volume", "create", self.volume)

    def run(self, image: str, *options: str) -> Container:
        subprocess.run(
            [*RUN, "--detach", "--name", self.name, *RESTRICTED, *options, image],
            check=True,
            capture_output=True,
            text=True,
        )
        return Container(self.name, self.port)

    def remove(self) -> None:
        podman("rm", "--force", "--time", "0", self.name, check=False)
        podman("volume", "rm", "--force", self.volume, check=False)


def wait_for(what: str, probe, container: Container, timeout: float):
    """Poll `probe` until it returns something truthy; fail with the container's logs."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            last = probe()
        except Exception as exc:
            last = exc
        if last and not isinstance(last, Exception):
            return last
        if not container.running():
            break
        time.sleep(0.2)
    raise AssertionError(f"{container.name}: no {what} (last: {last!r})\n{container.logs()[-6000:]}")


def inspect_json(name: str) -> str:
    return podman("inspect", name).stdout


def exit_code(name: str) -> int:
    return int(podman("inspect", "--format", "{{.State.ExitCode}}", name).stdout.strip())


# -- PostgreSQL


class Pg:
    def __init__(self, engine: Engine, container: Container, users: Path, passwords: dict[str, str]):
        self.engine, self.container, self.users, self.passwords = engine, container, users, passwords

    def query(self, user: str, password: str, database: str, *statements: str) -> list:
        """Each statement's rows, over TCP as `user` (asyncpg: SCRAM-SHA-256)."""

        async def run() -> list:
            connection = await asyncpg.connect(
                host="127.0.0.1",
                port=self.engine.port,
                user=user,
                password=password,
                database=database,
                timeout=10,
            )
            try:
                return [await connection.fetch(statement) for statement in statements]
            finally:
                await connection.close()

        return asyncio.run(run())

    def wait_ready(self, user: str, password: str, timeout: float = 60) -> float:
        started = time.monotonic()
        wait_for("connection", lambda: self.query(user, password, user, "SELECT 1"), self.container, timeout)
        return time.monotonic() - started

    def superuser_sql(self, sql: str) -> str:
        """psql in the container as the superuser, over the socket (pg_hba: trust)."""
        return podman("exec", self.container.name, "psql", "-X", "-At", "-U", "postgres", "-c", sql).stdout


@pytest.fixture(scope="module")
def pg(platform, tmp_path_factory) -> Iterator[Pg]:
    passwords = {"todo": secrets.token_urlsafe(24), "other": secrets.token_urlsafe(24)}
    users = secret_volume(tmp_path_factory.mktemp("pg") / "users", passwords)
    engine = Engine("postgres")
    try:
        container = engine.run(
            platform["postgres"],
            "--mount",
            "type=tmpfs,destination=/run/postgresql,U=true",  # an emptyDir owned by the pod's fsGroup
            "--volume",
            f"{engine.volume}:/var/lib/postgresql/data",
            "--volume",
            f"{users}:/etc/todo-postgres/users:ro",
            "--publish",
            f"127.0.0.1:{engine.port}:5432",
        )
        server = Pg(engine, container, users, passwords)
        took = server.wait_ready("todo", passwords["todo"])
        print(f"postgres: first start (initdb, users) ready in {took:.1f}s")
        yield server
    finally:
        engine.remove()


@pytest.mark.integration
def test_l3_postgres_user_owns_its_database_over_scram_tcp_and_nothing_more(pg):
    todo = pg.passwords["todo"]
    (_, _, rows, owner) = pg.query(
        "todo",
        todo,
        "todo",
        "CREATE TABLE notes (id serial PRIMARY KEY, body text NOT NULL)",
        "INSERT INTO notes (body) VALUES ('hello')",
        "SELECT current_user AS who, body FROM notes",
        "SELECT datdba::regrole::text AS owner FROM pg_database WHERE datname = current_database()",
    )
    assert [tuple(row) for row in rows] == [("todo", "hello")]
    assert owner[0]["owner"] == "todo"
    with pytest.raises(asyncpg.InvalidPasswordError):
        pg.query("todo", todo + "x", "todo", "SELECT 1")
    with pytest.raises(asyncpg.InsufficientPrivilegeError):  # another user's database
        pg.query("todo", todo, "other", "SELECT 1")
    with pytest.raises(asyncpg.InvalidAuthorizationSpecificationError):  # no superuser over TCP
        pg.query("postgres", todo, "postgres", "SELECT 1")
    # pg_hba: the socket trusts the superuser (psql above got in); TCP wants SCRAM
    rules = pg.superuser_sql(
        "SELECT type, user_name, auth_method FROM pg_hba_file_rules ORDER BY line_number"
    )
    assert rules.split() == [
        "local|{postgres}|trust",
        "local|{all}|scram-sha-256",
        "host|{postgres}|reject",
        "host|{postgres}|reject",
        "host|{all}|scram-sha-256",
        "host|{all}|scram-sha-256",
    ]
    verifiers = pg.superuser_sql("SELECT rolpassword FROM pg_authid WHERE rolname IN ('todo', 'other')")
    assert [line.split("$")[0] for line in verifiers.split()] == ["SCRAM-SHA-256"] * 2
    assert pg.container.pid1_uids() == [999] * 4


@pytest.mark.integration
def test_l3_postgres_restart_applies_a_changed_password_file_and_keeps_the_data(pg):
    old, new = pg.passwords["todo"], secrets.token_urlsafe(24)
    pg.query("todo", old, "todo", "CREATE TABLE kept (x int)", "INSERT INTO kept VALUES (42)")
    (pg.users / "todo").write_text(new + "\n")
    pg.passwords["todo"], pg.passwords["todo-before"] = new, old
    started = time.monotonic()
    podman("stop", "--time", str(STOP_GRACE), pg.container.name)  # SIGTERM: a fast shutdown
    stopped_in = time.monotonic() - started
    assert exit_code(pg.container.name) == 0, pg.container.logs()
    assert stopped_in < 5, f"podman stop took {stopped_in:.1f}s"
    podman("start", pg.container.name)
    took = pg.wait_ready("todo", new)
    print(f"postgres: SIGTERM -> exit 0 in {stopped_in:.1f}s; restarted, ready in {took:.1f}s")
    with pytest.raises(asyncpg.InvalidPasswordError):
        pg.query("todo", old, "todo", "SELECT 1")
    (rows,) = pg.query("todo", new, "todo", "SELECT x FROM kept")
    assert [row["x"] for row in rows] == [42]
    (rows,) = pg.query("other", pg.passwords["other"], "other", "SELECT current_user")
    assert rows[0][0] == "other"
    logs = pg.container.logs()
    assert "user todo: password changed" in logs and "user other: password unchanged" in logs


@pytest.mark.integration
def test_l3_postgres_no_password_in_logs_or_container_config(pg):
    with pytest.raises(asyncpg.InvalidPasswordError):  # a failed login is logged: its name only
        pg.query("other", pg.passwords["todo"], "other", "SELECT 1")
    logs, config = pg.container.logs(), inspect_json(pg.container.name)
    assert 'password authentication failed for user "other"' in logs
    for password in pg.passwords.values():
        assert password not in logs
        assert password not in config
    assert "SCRAM-SHA-256$" not in logs  # not even the verifiers


# -- Kafka


class Kafka:
    def __init__(self, engine: Engine, container: Container, ca: Path, passwords: dict[str, str]):
        self.engine, self.container, self.ca, self.passwords = engine, container, ca, passwords

    def config(self, user: str, password: str | None = None, ca: Path | None = None, **extra) -> dict:
        """librdkafka's settings: SASL_SSL, SCRAM-SHA-256, the CA verified, the host name checked."""
        return {
            "bootstrap.servers": f"localhost:{self.engine.port}",
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": "SCRAM-SHA-256",
            "sasl.username": user,
            "sasl.password": password or self.passwords[user],
            "ssl.ca.location": str(ca or self.ca),
            "ssl.endpoint.identification.algorithm": "https",
            **extra,
        }


@pytest.fixture(scope="module")
def kafka(platform, tmp_path_factory) -> Iterator[Kafka]:
    folder = tmp_path_factory.mktemp("kafka")
    pki = server_pki("todo-test-kafka-image-ca", "kafka", hosts=("localhost", "127.0.0.1"))
    # a kubernetes.io/tls Secret (cert-manager with privateKey.encoding PKCS8), mounted
    tls = secret_volume(
        folder / "tls", {"tls.crt": pki.cert_pem, "tls.key": pki.key_pem, "ca.crt": pki.ca_pem}
    )
    ca = folder / "ca.pem"
    ca.write_bytes(pki.ca_pem)
    passwords = {"admin": secrets.token_urlsafe(24), "todo": secrets.token_urlsafe(24)}
    users = secret_volume(folder / "users", passwords)
    engine = Engine("kafka")
    try:
        container = engine.run(
            platform["kafka"],
            "--mount",
            "type=tmpfs,destination=/tmp,U=true",  # the pod's emptyDir at /tmp, owned by its fsGroup
            "--volume",
            f"{engine.volume}:/var/lib/kafka/data",
            "--volume",
            f"{tls}:/etc/todo-kafka/tls:ro",
            "--volume",
            f"{users}:/etc/todo-kafka/users:ro",
            "--env",
            "KAFKA_ADVERTISED_HOST=localhost",
            "--env",
            f"KAFKA_ADVERTISED_PORT={engine.port}",
            "--publish",
            f"127.0.0.1:{engine.port}:9093",
        )
        server = Kafka(engine, container, ca, passwords)
        started = time.monotonic()

        def brokers():
            admin = AdminClient(server.config("admin", logger=quiet_logger()))
            return admin.list_topics(timeout=5).brokers

        wait_for("metadata from the admin", brokers, container, timeout=120)
        print(f"kafka: first start (format, SCRAM users) ready in {time.monotonic() - started:.1f}s")
        yield server
    finally:
        engine.remove()


def quiet_logger():
    """librdkafka's log lines go to a logger, not to stderr (the refused logins are expected)."""
    import logging

    logger = logging.getLogger("test_platform_images.librdkafka")
    logger.propagate = False
    logger.addHandler(logging.NullHandler())
    return logger


@pytest.mark.integration
def test_l3_kafka_produces_and_consumes_over_sasl_ssl_scram_verifying_the_ca(kafka):
    topic = f"task-events-{uuid.uuid4().hex[:6]}"
    admin = AdminClient(kafka.config("admin"))
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])[topic].result(30)
    producer = Producer(kafka.config("todo"))
    payload = secrets.token_hex(8).encode()
    producer.produce(topic, key=b"user-1", value=payload)
    assert producer.flush(30) == 0
    consumer = Consumer(kafka.config("todo", **{"group.id": "notifier", "auto.offset.reset": "earliest"}))
    consumer.subscribe([topic])
    try:
        message = wait_for("message", lambda: _value(consumer.poll(1)), kafka.container, timeout=60)
    finally:
        consumer.close()
    assert message == payload


def _value(message) -> bytes | None:
    return message.value() if message is not None and message.error() is None else None


def _first_error(config: dict, container: Container) -> KafkaError:
    errors: list[KafkaError] = []
    producer = Producer({**config, "error_cb": errors.append, "logger": quiet_logger()})

    def failed():
        producer.poll(0.2)
        return errors[0] if errors else None

    return wait_for("error", failed, container, timeout=30)


@pytest.mark.integration
def test_l3_kafka_refuses_a_wrong_password_and_a_client_trusting_another_ca(kafka, tmp_path):
    error = _first_error(kafka.config("todo", password=kafka.passwords["todo"] + "x"), kafka.container)
    assert error.code() == KafkaError._AUTHENTICATION, error.str()
    assert "invalid credentials" in error.str()
    other = tmp_path / "other-ca.pem"
    other.write_bytes(server_pki("another-ca", "kafka", hosts=("localhost",)).ca_pem)
    error = _first_error(kafka.config("todo", ca=other), kafka.container)
    assert error.code() in {KafkaError._SSL, KafkaError._TRANSPORT}, error.str()
    assert "certificate verify failed" in error.str()


@pytest.mark.integration
def test_l3_kafka_runs_as_1001_keeps_secrets_out_of_logs_and_stops_on_sigterm(kafka):
    assert kafka.container.pid1_uids() == [1001] * 4
    logs, config = kafka.container.logs(), inspect_json(kafka.container.name)
    assert "formatted /var/lib/kafka/data/kraft" in logs and "SCRAM users admin, todo" in logs
    for password in kafka.passwords.values():
        assert password not in logs
        assert password not in config
    assert "PRIVATE KEY" not in logs
    exit_status, stopped_in = kafka.container.terminate(STOP_GRACE)
    print(f"kafka: SIGTERM -> exit {exit_status} in {stopped_in:.1f}s")
    assert exit_status == 143 and stopped_in < STOP_GRACE, kafka.container.logs()[-4000:]
    logs = kafka.container.logs()
    assert "Beginning controlled shutdown." in logs and "[BrokerServer id=1] shut down completed" in logs


# -- Dapr


@pytest.mark.integration
def test_l3_daprd_image_prints_the_pinned_version_as_user_65532(platform):
    image = platform["daprd"]
    version = subprocess.run(
        [*RUN, "--rm", "--network", "none", *RESTRICTED, image, "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert version.stdout.strip() == DAPR
    who = subprocess.run(
        [*RUN, "--rm", "--network", "none", *RESTRICTED, "--entrypoint", "sh", image, "-c", "id -u; id -g"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert who.stdout.split() == ["65532", "65532"], who.stdout
    config = json.loads(podman("image", "inspect", "--format", "{{json .Config}}", image).stdout)
    assert config["User"] == "65532:65532" and config["Entrypoint"] == ["/daprd"]


@pytest.mark.integration
def test_l3_dapr_scheduler_serves_healthz_as_65532_with_its_etcd_in_the_volume(platform):
    engine = Engine("dapr-scheduler")
    try:
        container = engine.run(
            platform["dapr-scheduler"],
            "--volume",
            f"{engine.volume}:/var/lib/dapr/scheduler",
            "--publish",
            f"127.0.0.1:{engine.port}:8080",
        )
        started = time.monotonic()
        wait_for("healthz", lambda: container.status("/healthz") == 200, container, timeout=60)
        print(f"dapr scheduler: /healthz 200 after {time.monotonic() - started:.1f}s")
        assert f"Starting Dapr Scheduler Service -- version {DAPR}" in container.logs()
        assert container.pid1_uids() == [65532] * 4
        data = podman("exec", container.name, "ls", "/var/lib/dapr/scheduler/data").stdout.split()
        assert "default-dapr-scheduler-server-0" in data  # etcd's member folder
        exit_status, stopped_in = container.terminate(STOP_GRACE)
        assert exit_status == 0 and stopped_in < 10, container.logs()[-4000:]
        assert http_status(container.url("/healthz")) is None
    finally:
        engine.remove()
