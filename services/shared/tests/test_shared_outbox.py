"""The shared transactional outbox relay (todo_shared.outbox): its configuration and SQL (rung
L0), and (rung L1) a relay on a table of its own in a real PostgreSQL publishing through a
real daprd's bulk publish API to a real Kafka topic: CloudEvents keyed by user (the
per-entry partition key), each user's events in order, each event once even with two relays
draining the same table, and a bulk call that Kafka fails for one entry only (a message over
the producer's size limit) holding back that user's events alone."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import text
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import create_async_engine
from todo_shared.dapr import DaprClient
from todo_shared.outbox import (
    OutboxMetrics,
    OutboxRelay,
    OutboxStatements,
    RelayConfig,
    insert_event_statement,
    user_lock_key,
)
from todo_shared.settings import ServiceSettings

from testkit.procs import free_port

# -- configuration and SQL (unit) ----------------------------------------------------------------


class _Settings(ServiceSettings):
    pubsub_name: str = "bus"
    event_source: str = "todo-test"
    outbox_users_per_round: int = 7
    outbox_backoff_max_seconds: float = 3.0


@pytest.mark.unit
def test_the_config_reads_the_services_outbox_settings():
    config = RelayConfig.from_settings(
        _Settings(), table="my_outbox", topic="things", subject_column="thing_id"
    )
    assert (config.table, config.topic, config.pubsub, config.source) == (
        "my_outbox",
        "things",
        "bus",
        "todo-test",
    )
    assert config.users_per_round == 7
    assert config.backoff_max_seconds == 3.0
    assert config.events_per_user == RelayConfig.events_per_user, "absent settings keep the defaults"
    assert config.subject_column == "thing_id"


@pytest.mark.unit
@pytest.mark.parametrize("name", ["outbox; DROP TABLE x", "Outbox", "1table", "a-b", "", "x" * 64])
def test_only_plain_identifiers_reach_the_sql(name):
    with pytest.raises(ValueError, match="identifier"):
        OutboxStatements(name)
    with pytest.raises(ValueError, match="identifier"):
        OutboxStatements("outbox", subject_column=name)
    with pytest.raises(ValueError, match="identifier"):
        insert_event_statement(name)
    with pytest.raises(ValueError, match="identifier"):
        OutboxMetrics(CollectorRegistry(), prefix=name)


@pytest.mark.unit
def test_statements_name_the_table_and_subject_column():
    sql = OutboxStatements("reminder_outbox", subject_column="thing_id")
    claim = str(sql.claim.compile(dialect=postgresql.dialect()))
    assert "FROM reminder_outbox AS e" in claim
    assert "FOR UPDATE OF e SKIP LOCKED" in claim
    assert "o.thing_id AS subject" in claim
    assert str(sql.delete_published).startswith("DELETE FROM reminder_outbox")
    assert "INSERT INTO reminder_outbox (id, type, user_id, thing_id, payload)" in str(
        insert_event_statement("reminder_outbox", "thing_id")
    )


@pytest.mark.unit
def test_backoff_is_exponential_with_jitter_and_capped():
    config = RelayConfig(
        table="t", pubsub="p", topic="x", source="s", backoff_base_seconds=1.0, backoff_max_seconds=8.0
    )
    relay = OutboxRelay(engine=None, dapr=None, config=config, metrics=OutboxMetrics(CollectorRegistry()))
    for failures, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (100, 8.0)]:
        relay.consecutive_failures = failures
        delays = {relay.backoff_delay() for _ in range(50)}
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(delays) > 1


@pytest.mark.unit
def test_metric_names_take_the_prefix():
    registry = CollectorRegistry()
    OutboxMetrics(registry, prefix="reminders_outbox")
    names = {m.name for m in registry.collect()}
    assert {
        "reminders_outbox_backlog_events",
        "reminders_outbox_published",
        "reminders_outbox_publish_failures",
    } <= names


# -- a relay on a real PostgreSQL, daprd and Kafka (integration) ----------------------------------

TABLE = """
CREATE TABLE thing_events (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id uuid NOT NULL UNIQUE,
    type varchar(32) NOT NULL,
    user_id uuid NOT NULL,
    thing_id uuid NOT NULL,
    payload jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz,
    attempts integer NOT NULL DEFAULT 0,
    last_error text
)
"""


def _async(dsn: str) -> str:
    return dsn.replace("postgresql://", "postgresql+asyncpg://", 1)


def _read(kafka, topic: str, count: int, linger: float) -> list:
    from confluent_kafka import Consumer

    consumer = Consumer(
        kafka.client_config(**{"group.id": uuid.uuid4().hex, "auto.offset.reset": "earliest"})
    )
    consumer.subscribe([topic])
    found, deadline, stop = [], time.monotonic() + 30, None
    try:
        while time.monotonic() < (stop or deadline):
            message = consumer.poll(0.2)
            if message is not None and not message.error():
                found.append((message.key().decode(), json.loads(message.value())))
            if stop is None and len(found) >= count:
                stop = time.monotonic() + linger
    finally:
        consumer.close()
    return found


async def _write_events(engine, users, rounds: int, payload=None) -> dict[str, list[str]]:
    """``rounds`` events per user, interleaved, each in its own transaction as services write
    them; each user's event ids in commit order."""
    insert = insert_event_statement("thing_events", "thing_id")
    expected: dict[str, list[str]] = {str(u): [] for u in users}
    for i in range(rounds):
        for user in users:
            event_id, thing = uuid.uuid4(), uuid.uuid4()
            data = {"n": i, "thing": str(thing)}
            if payload is not None:
                data.update(payload(user, i))
            async with engine.begin() as conn:
                await conn.execute(
                    insert,
                    {
                        "lock_key": user_lock_key(user),
                        "id": event_id,
                        "type": "thing.made",
                        "user_id": user,
                        "subject": thing,
                        "payload": data,
                    },
                )
            expected[str(user)].append(str(event_id))
    return expected


def _daprd_metric(sidecar, name: str) -> float:
    """The sum of a daprd metric's samples (its Prometheus endpoint)."""
    import httpx

    text_ = httpx.get(f"http://127.0.0.1:{sidecar.metrics_port}/metrics", timeout=5).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text_.splitlines() if line.startswith(name + "{"))


@pytest.mark.integration
async def test_a_bulk_entry_kafka_refuses_holds_back_only_its_users_events(dapr, database):
    """Real daprd + Kafka: user A's oldest event is larger than the Kafka producer accepts, so
    Dapr's bulk answer lists that entry alone as failed. The other users' events go out (in
    bulk calls with several entries, each keyed by its own user); A's event stays pending with
    its attempts and error counted, and A's later events are never sent before it. Once the
    event fits (here: its payload is trimmed), A's events go out, in order."""
    topic = f"things-{uuid.uuid4().hex[:8]}"
    dapr.topics(topic, partitions=3)
    token = uuid.uuid4().hex
    sidecar = dapr.sidecar("api", free_port(), api_token=token)
    engine = create_async_engine(_async(database))
    users = [uuid.uuid4() for _ in range(3)]
    huge = "x" * 1_100_000  # over the Kafka producer's message limit (1 MiB)
    client = DaprClient(sidecar.http_port, api_token=token)
    relay = OutboxRelay(
        engine,
        client,
        RelayConfig(
            table="thing_events",
            pubsub="pubsub",
            topic=topic,
            source="todo-test",
            subject_column="thing_id",
            backoff_base_seconds=0.05,
            backoff_max_seconds=0.2,
        ),
        OutboxMetrics(CollectorRegistry()),
    )
    try:
        async with engine.begin() as conn:
            await conn.execute(text(TABLE))
        expected = await _write_events(
            engine, users, 3, payload=lambda user, i: {"pad": huge} if (user, i) == (users[0], 0) else {}
        )
        first = await relay.run_once()
        # Three layers (each user's 1st, 2nd, 3rd event): A's 1st fails, so A is left out after it.
        assert (first.claimed_users, first.bulk_calls, first.published, first.failed) == (3, 3, 6, 1)
        assert "larger than configured Producer.MaxMessageBytes" in first.errors[0], first.errors
        for _ in range(2):
            again = await relay.run_once()
            assert (again.claimed_users, again.published, again.failed) == (1, 0, 1), again
        async with engine.connect() as conn:
            rows = (await conn.execute(text("SELECT * FROM thing_events ORDER BY seq"))).all()
        assert [str(r.id) for r in rows] == expected[str(users[0])], "only A's events are left"
        assert rows[0].attempts == 3
        assert all(r.attempts == 0 for r in rows[1:]), "A's later events were never sent"
        count, age = await relay.refresh_metrics()
        assert count == 3
        assert age > 0
        published = await asyncio.to_thread(_read, dapr.kafka, topic, 6, 1.0)
        assert {key for key, _ in published} == {str(users[1]), str(users[2])}

        async with engine.begin() as conn:
            await conn.execute(text("UPDATE thing_events SET payload = payload - 'pad'"))
        while (await relay.run_once()).claimed_users:
            pass
        published = await asyncio.to_thread(_read, dapr.kafka, topic, 9, 2.0)
        bulk_calls = _daprd_metric(sidecar, "dapr_component_pubsub_egress_bulk_count")
        single_calls = _daprd_metric(sidecar, "dapr_component_pubsub_egress_count")
    finally:
        await client.aclose()
        await engine.dispose()
        sidecar.stop()

    by_user: dict[str, list[str]] = {}
    for key, envelope in published:
        by_user.setdefault(key, []).append(envelope["id"])
    assert by_user == expected, "each event once, keyed by its user, each user's in order"
    # daprd's own count: every event went through its bulk publish API, never the single one.
    assert bulk_calls >= 6
    assert single_calls == 0


@pytest.mark.integration
async def test_two_relays_publish_each_event_once_keyed_by_user_in_order(dapr, database):
    topic = f"things-{uuid.uuid4().hex[:8]}"
    dapr.topics(topic, partitions=3)
    token = uuid.uuid4().hex
    sidecar = dapr.sidecar("api", free_port(), api_token=token)  # an app id the pubsub is scoped to
    engine = create_async_engine(_async(database))
    users = [uuid.uuid4() for _ in range(4)]
    try:
        async with engine.begin() as conn:
            await conn.execute(text(TABLE))
        expected = await _write_events(engine, users, 6)
        config = RelayConfig(
            table="thing_events",
            pubsub="pubsub",
            topic=topic,
            source="todo-test",
            subject_column="thing_id",
            users_per_round=2,
            events_per_user=2,
            poll_interval_seconds=0.05,
        )
        clients = [DaprClient(sidecar.http_port, api_token=token) for _ in range(2)]
        registries = [CollectorRegistry(), CollectorRegistry()]
        relays = [
            OutboxRelay(engine, client, config, OutboxMetrics(registry))
            for client, registry in zip(clients, registries, strict=True)
        ]
        for relay in relays:
            relay.start()
        try:
            published = await asyncio.to_thread(_read, dapr.kafka, topic, 24, 2.0)
        finally:
            for relay in relays:
                await relay.stop()
            for client in clients:
                await client.aclose()
        async with engine.connect() as conn:
            pending = (await conn.execute(text("SELECT count(*) FROM thing_events"))).scalar()
        count, age = await relays[0].refresh_metrics()
    finally:
        await engine.dispose()
        sidecar.stop()

    assert len(published) == 24, "each event exactly once"
    by_user: dict[str, list[str]] = {}
    for key, envelope in published:
        by_user.setdefault(key, []).append(envelope["id"])
        assert envelope["type"] == "thing.made"
        assert envelope["source"] == "todo-test"
        assert envelope["subject"] == envelope["data"]["thing"]
    assert by_user == expected, "partition key = user id; one user's events in order"
    assert pending == 0
    assert (count, age) == (0, 0.0)
    per_relay = [
        r.get_sample_value("outbox_published_total", {"type": "thing.made"}) or 0 for r in registries
    ]
    assert sum(per_relay) == 24


@pytest.mark.integration
async def test_a_relay_that_deleted_enough_events_vacuums_the_table(database):
    """Published events leave dead rows that every claim walks over until they are vacuumed:
    after ``vacuum_after_events`` deletions the relay runs VACUUM on the table itself (real
    PostgreSQL; the sidecar is the stand-in, a real HTTP server speaking the bulk API)."""
    from todo_shared.testing import dapr_sidecar_standin

    engine = create_async_engine(_async(database))
    users = [uuid.uuid4() for _ in range(3)]
    try:
        async with engine.begin() as conn:
            await conn.execute(text(TABLE))
        await _write_events(engine, users, 4)
        with dapr_sidecar_standin() as sidecar:
            async with DaprClient(sidecar.port) as client:
                config = RelayConfig(
                    table="thing_events",
                    pubsub="pubsub",
                    topic="things",
                    source="todo-test",
                    subject_column="thing_id",
                    poll_interval_seconds=0.05,
                    metrics_interval_seconds=0.05,
                    vacuum_after_events=10,
                    vacuum_interval_seconds=0,
                )
                relay = OutboxRelay(engine, client, config, OutboxMetrics(CollectorRegistry()))
                relay.start()
                try:
                    await sidecar.wait_for_async(12)
                    deadline = time.monotonic() + 10
                    while relay.vacuums < 1 and time.monotonic() < deadline:
                        await asyncio.sleep(0.05)
                finally:
                    await relay.stop()
        async with engine.connect() as conn:
            left = (await conn.execute(text("SELECT count(*) FROM thing_events"))).scalar()
            vacuumed = (
                await conn.execute(
                    text("SELECT vacuum_count FROM pg_stat_user_tables WHERE relname = 'thing_events'")
                )
            ).scalar()
    finally:
        await engine.dispose()
    assert left == 0
    assert relay.vacuums == 1, "12 deletions, one VACUUM after the first 10"
    assert relay.deleted_since_vacuum == 0
    assert vacuumed >= 1, "PostgreSQL counted the VACUUM"
