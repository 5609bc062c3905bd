"""The shared transactional outbox relay (todo_shared.outbox): its configuration and SQL (rung
L0), and (rung L1) a relay on a table of its own in a real PostgreSQL publishing through a
real daprd to a real Kafka topic: CloudEvents keyed by user, each user's events in order,
each event once even with two relays draining the same table."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import text
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
    assert "FROM reminder_outbox e" in str(sql.claim_users)
    assert "o.thing_id AS subject" in str(sql.lock_batches)
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


@pytest.mark.integration
async def test_two_relays_publish_each_event_once_keyed_by_user_in_order(dapr, database):
    topic = f"things-{uuid.uuid4().hex[:8]}"
    dapr.topics(topic, partitions=3)
    token = uuid.uuid4().hex
    sidecar = dapr.sidecar("api", free_port(), api_token=token)  # an app id the pubsub is scoped to
    engine = create_async_engine(_async(database))
    insert = insert_event_statement("thing_events", "thing_id")
    users = [uuid.uuid4() for _ in range(4)]
    expected: dict[str, list[str]] = {str(u): [] for u in users}
    try:
        async with engine.begin() as conn:
            await conn.execute(text(TABLE))
        for i in range(6):
            for user in users:
                event_id, thing = uuid.uuid4(), uuid.uuid4()
                async with engine.begin() as conn:
                    await conn.execute(
                        insert,
                        {
                            "lock_key": user_lock_key(user),
                            "id": event_id,
                            "type": "thing.made",
                            "user_id": user,
                            "subject": thing,
                            "payload": {"n": i, "thing": str(thing)},
                        },
                    )
                expected[str(user)].append(str(event_id))
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
            pending = (
                await conn.execute(text("SELECT count(*) FROM thing_events WHERE published_at IS NULL"))
            ).scalar()
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
