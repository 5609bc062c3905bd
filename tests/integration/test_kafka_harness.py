"""The Kafka harness itself: a real Apache Kafka broker reached like Redpanda Cloud (rung L1).

The app (through Dapr's pubsub.kafka) reaches Redpanda Cloud over SASL_SSL with
SCRAM-SHA-256; these tests prove the local broker accepts exactly that and nothing weaker,
keeps per-key order, and loses nothing across an outage. Redpanda Cloud itself is L4
(GitHub Actions, online tier).
"""

from __future__ import annotations

import logging
import socket
import ssl
import time
import uuid
from collections import defaultdict

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient

from testkit.kafka import Kafka, make_pki

pytestmark = pytest.mark.integration


def produce(config: dict, topic: str, messages: list[tuple[str | None, str]]) -> None:
    """Produce (idempotent, acks=all), flush, and fail on any delivery error."""
    failed: list = []
    producer = Producer({**config, "enable.idempotence": True, "acks": "all"})
    for key, value in messages:
        producer.produce(
            topic,
            value=value.encode(),
            key=key.encode() if key else None,
            on_delivery=lambda err, _msg: err and failed.append(err),
        )
        producer.poll(0)
    assert producer.flush(30) == 0, "messages still queued after 30s"
    assert failed == []


def consume(config: dict, topic: str, count: int, group: str | None = None, timeout: float = 30) -> list:
    consumer = Consumer(
        {
            **config,
            "group.id": group or f"g-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    got = []
    deadline = time.monotonic() + timeout
    try:
        while len(got) < count and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                raise KafkaException(msg.error())
            got.append(msg)
        if got:
            consumer.commit(asynchronous=False)
    finally:
        consumer.close()
    return got


class Collected(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def refused(config: dict, wait: float = 10) -> tuple[list[KafkaError], str]:
    """Connect with `config` and get no metadata; librdkafka's errors and log lines."""
    errors: list[KafkaError] = []
    logs = Collected()
    logger = logging.getLogger(f"rdkafka.{uuid.uuid4().hex[:8]}")
    logger.addHandler(logs)
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    admin = AdminClient({**config, "error_cb": errors.append, "logger": logger})
    with pytest.raises(KafkaException):
        admin.list_topics(timeout=1)
    deadline = time.monotonic() + wait  # errors and logs arrive through poll()
    while not (errors and logs.lines) and time.monotonic() < deadline:
        admin.poll(0.1)
    admin.poll(0.1)
    return errors, "\n".join(logs.lines)


def test_produce_and_consume_over_sasl_ssl_with_scram(kafka, kafka_topic):
    assert kafka.client_config()["security.protocol"] == "SASL_SSL"
    assert kafka.client_config()["sasl.mechanism"] == "SCRAM-SHA-256"
    sent = [(None, f"event-{i}") for i in range(20)]
    produce(kafka.client_config(), kafka_topic, sent)
    got = consume(kafka.client_config(), kafka_topic, len(sent))
    assert sorted(m.value().decode() for m in got) == sorted(v for _, v in sent)


def test_the_broker_certificate_verifies_against_the_ca_only(kafka, tmp_path):
    trusted = ssl.create_default_context(cafile=str(kafka.ca_file))
    for name in ("127.0.0.1", "localhost"):
        with (
            socket.create_connection(("127.0.0.1", kafka.port), timeout=5) as raw,
            trusted.wrap_socket(raw, server_hostname=name) as tls,
        ):
            assert tls.version() in {"TLSv1.2", "TLSv1.3"}
    with (
        pytest.raises(ssl.SSLCertVerificationError),
        socket.create_connection(("127.0.0.1", kafka.port), timeout=5) as raw,
        ssl.create_default_context().wrap_socket(raw, server_hostname="127.0.0.1"),
    ):
        pass  # the system trust store does not know the test CA
    make_pki(tmp_path)  # another CA: librdkafka must refuse the broker's certificate
    errors, _ = refused(kafka.client_config(**{"ssl.ca.location": str(tmp_path / "ca.pem")}))
    assert any(e.code() == KafkaError._SSL and "certificate verify failed" in e.str() for e in errors), errors


def test_a_wrong_password_is_refused(kafka):
    errors, _ = refused(kafka.client_config(password="not-the-" + kafka.password))
    assert any(e.code() == KafkaError._AUTHENTICATION for e in errors), errors
    assert any("SCRAM-SHA-256" in e.str() for e in errors), errors


def test_an_unknown_user_is_refused(kafka):
    errors, _ = refused(kafka.client_config(username="mallory"))
    assert any(e.code() == KafkaError._AUTHENTICATION for e in errors), errors


@pytest.mark.parametrize(
    ("weaker", "dropped_in"),
    [
        # No TLS: the broker, expecting a TLS ClientHello, drops the first Kafka request,
        # before any SASL step, so a SASL_PLAINTEXT client's password never leaves it.
        ({"security.protocol": "PLAINTEXT"}, "state APIVERSION_QUERY"),
        ({"security.protocol": "SASL_PLAINTEXT"}, "state APIVERSION_QUERY"),
        # TLS but no SASL: the handshake works, the first request that needs a user is refused.
        ({"security.protocol": "SSL"}, "SSL connection closed by peer"),
    ],
    ids=["PLAINTEXT", "SASL_PLAINTEXT", "SSL"],
)
def test_weaker_connections_to_the_sasl_ssl_port_fail(kafka, weaker, dropped_in):
    config = {k: v for k, v in kafka.client_config().items() if k.startswith(("bootstrap", "ssl.ca"))}
    if weaker["security.protocol"].startswith("SASL"):
        config |= {k: kafka.client_config()[k] for k in ("sasl.mechanism", "sasl.username", "sasl.password")}
    errors, logs = refused({**config, **weaker})
    assert any(e.code() == KafkaError._ALL_BROKERS_DOWN for e in errors), errors
    assert "Disconnected" in logs and dropped_in in logs, logs


def test_the_controller_port_is_on_loopback_and_not_advertised(kafka):
    metadata = AdminClient(kafka.client_config()).list_topics(timeout=10)
    assert [(b.host, b.port) for b in metadata.brokers.values()] == [("127.0.0.1", kafka.port)]
    listeners = (kafka.workdir / "server.properties").read_text()
    assert f"CONTROLLER://127.0.0.1:{kafka.controller_port}" in listeners


def test_messages_with_the_same_key_stay_in_order_within_a_partition(kafka, kafka_topic):
    keys = [f"todo-{i}" for i in range(6)]
    sent = [(keys[i % len(keys)], f"{keys[i % len(keys)]}:{i // len(keys)}") for i in range(120)]
    produce(kafka.client_config(), kafka_topic, sent)
    got = consume(kafka.client_config(), kafka_topic, len(sent))
    assert len(got) == len(sent)
    partitions, sequences = defaultdict(set), defaultdict(list)
    for msg in got:  # poll order is per-partition order
        key = msg.key().decode()
        partitions[key].add(msg.partition())
        sequences[key].append(int(msg.value().decode().split(":")[1]))
    assert all(len(p) == 1 for p in partitions.values()), partitions
    assert len({p for ps in partitions.values() for p in ps}) > 1, "all keys hashed to one partition"
    for key, seq in sequences.items():
        assert seq == list(range(len(sent) // len(keys))), key


def test_an_outage_loses_no_message(kafka, kafka_topic):
    """Stop the broker, keep producing into the client's buffer, restart: nothing lost, nothing twice."""
    group = f"g-{uuid.uuid4().hex[:8]}"
    before = [("k", f"before-{i}") for i in range(10)]
    produce(kafka.client_config(), kafka_topic, before)
    assert len(consume(kafka.client_config(), kafka_topic, 10, group=group)) == 10  # offsets committed

    during = [f"during-{i}" for i in range(10)]
    settings = {"enable.idempotence": True, "acks": "all", "message.timeout.ms": 120_000}
    # librdkafka backs off reconnecting up to 10 s by default; keep the test short.
    producer = Producer(kafka.client_config(**settings, **{"reconnect.backoff.max.ms": 1000}))
    kafka.stop_broker()
    try:
        for value in during:
            producer.produce(kafka_topic, key=b"k", value=value.encode())
        assert producer.flush(2) == len(during), "delivered while the broker was down?"
    finally:
        kafka.start_broker()
    back = time.monotonic()
    assert producer.flush(60) == 0, "messages still queued 60s after the broker came back"
    print(f"the buffered messages were delivered {time.monotonic() - back:.1f}s after the broker was back")

    after = consume(kafka.client_config(), kafka_topic, len(during), group=group)
    assert [m.value().decode() for m in after] == during  # same key: one partition, in order
    everything = consume(kafka.client_config(), kafka_topic, 20)
    assert sorted(m.value().decode() for m in everything) == sorted([v for _, v in before] + during)


def test_a_crashed_broker_comes_back_with_its_data(kafka, kafka_topic):
    produce(kafka.client_config(), kafka_topic, [("k", f"m-{i}") for i in range(5)])
    kafka.stop_broker(kill=True)  # SIGKILL: no clean shutdown, logs recovered on start
    kafka.start_broker()
    got = consume(kafka.client_config(), kafka_topic, 5)
    assert [m.value().decode() for m in got] == [f"m-{i}" for i in range(5)]


def test_authorizer_mode_enforces_acls_for_the_app_user():
    """Like Redpanda Cloud: the app's user may do only what its ACLs allow; the admin is a super user."""
    with Kafka.create(authorizer=True) as kafka:
        topic = kafka.create_topic("todo.events", partitions=1)
        producer = Producer(kafka.client_config(**{"log_level": 0}))
        errors = []
        producer.produce(topic, b"x", on_delivery=lambda err, _msg: errors.append(err))
        producer.flush(10)
        assert errors and errors[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, errors
        kafka.allow("TOPIC", "todo.", "WRITE", prefixed=True)
        kafka.allow("TOPIC", "todo.", "READ", prefixed=True)
        kafka.allow("GROUP", "todo-", "READ", prefixed=True)
        produce(kafka.client_config(), topic, [(None, "granted")])
        got = consume(kafka.client_config(), topic, 1, group="todo-notifier")
        assert [m.value() for m in got] == [b"granted"]


def test_a_cluster_id_that_starts_with_a_dash_formats_and_starts():
    """Random ids are base64url: one in 64 starts with "-" (`make dev` failed on one)."""
    with Kafka.create(cluster_id="-" + uuid.uuid4().hex[:21]) as broker:
        assert broker.cluster_id.startswith("-")
        broker.create_topic(f"t-{uuid.uuid4().hex[:8]}")  # raises unless the broker serves it
