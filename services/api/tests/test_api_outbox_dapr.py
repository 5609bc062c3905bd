"""The outbox relay through a REAL daprd to a real Kafka broker (SASL_SSL, SCRAM-SHA-256),
with the project's pub/sub component, through Dapr's bulk publish API: what arrives on the
topic, keyed by user (the per-entry partition key), in order,
and that nothing is lost while the sidecar or the broker is away. Rung L2 for Dapr (real
sidecar and broker as processes)."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import uuid
from collections import defaultdict

import pytest
from api_testlib import keep_outbox_history, make_settings, outbox_history, register, running
from confluent_kafka import Consumer
from todo_api.app import create_api_app

pytestmark = pytest.mark.integration

TASKS = "/api/v1/tasks"


@pytest.fixture
def topic(dapr) -> str:
    [name] = dapr.topics(f"task-events-{uuid.uuid4().hex[:8]}", partitions=3)
    return name


def read_topic(kafka, topic: str, count: int, timeout: float = 60) -> list[dict]:
    """Records of the topic (key, partition, the CloudEvent) until `count` distinct events."""
    consumer = Consumer(
        kafka.client_config(**{"group.id": f"test-{uuid.uuid4().hex[:8]}", "auto.offset.reset": "earliest"})
    )
    consumer.subscribe([topic])
    records: list[dict] = []
    distinct: set[str] = set()
    deadline = time.monotonic() + timeout
    try:
        while len(distinct) < count and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None or message.error():
                continue
            records.append(
                {
                    "key": message.key().decode(),
                    "partition": message.partition(),
                    "event": json.loads(message.value()),
                }
            )
            distinct.add(records[-1]["event"]["id"])
    finally:
        consumer.close()
    assert len(distinct) >= count, f"{len(distinct)} of {count} events after {timeout}s"
    return records


def by_user(records: list[dict], *, redelivered: bool = False) -> dict[str, list[str]]:
    """Each user's event ids in topic order. Delivery is at least once: after a failure an
    event may appear again (`redelivered=True` keeps its first appearance); otherwise not."""
    seen: dict[str, list[str]] = defaultdict(list)
    for record in records:
        ids = seen[record["key"]]
        if record["event"]["id"] in ids:
            assert redelivered, f"event {record['event']['id']} published twice"
            continue
        ids.append(record["event"]["id"])
    return seen


async def outbox_ids(app) -> dict[str, list[str]]:
    """Each user's event ids in commit order: every event written (the relay deletes the
    published ones, so they come from the history ``keep_outbox_history`` keeps)."""
    expected: dict[str, list[str]] = defaultdict(list)
    for row in await outbox_history(app.state.engine):
        expected[str(row.user_id)].append(str(row.id))
    return expected


async def write_tasks(client, users, rounds: int) -> None:
    for n in range(rounds):
        for user in users:
            created = await client.post(TASKS, json={"title": f"task {n}"}, headers=user.headers)
            assert created.status_code == 201, created.text
            if n % 2:
                done = await client.post(f"{TASKS}/{created.json()['id']}/complete", headers=user.headers)
                assert done.status_code == 200, done.text


def app_for(api_db, sidecar, topic: str, token: str):
    settings = make_settings(
        api_db, dapr_http_port=sidecar.http_port, dapr_api_token=token, task_events_topic=topic
    )
    return create_api_app(settings)


async def test_events_reach_kafka_keyed_by_user_in_order_as_cloudevents(api_db, dapr, kafka, topic):
    token = secrets.token_hex(16)
    with dapr.sidecar("api", None, api_token=token) as sidecar:
        app = app_for(api_db, sidecar, topic, token)
        async with running(app) as client:
            await keep_outbox_history(app.state.engine)
            users = [await register(client) for _ in range(3)]
            await write_tasks(client, users, rounds=4)
            expected = await outbox_ids(app)
            total = sum(len(ids) for ids in expected.values())
            records = await asyncio.to_thread(read_topic, kafka, topic, total)
    assert by_user(records) == expected  # every event once, each user's in commit order
    for record in records:
        event = record["event"]
        assert event["data"]["event_id"] == event["id"]  # the outbox id is the CloudEvent id
        assert event["data"]["user_id"] == record["key"]  # partition key = user id
        assert event["type"] == event["data"]["type"] and event["type"].startswith("task.")
    partitions = defaultdict(set)
    for record in records:
        partitions[record["key"]].add(record["partition"])
    assert all(len(p) == 1 for p in partitions.values()), "one user's events share a partition"


async def test_nothing_is_lost_while_the_sidecar_is_down(api_db, dapr, kafka, topic):
    token = secrets.token_hex(16)
    with dapr.sidecar("api", None, api_token=token) as sidecar:
        app = app_for(api_db, sidecar, topic, token)
        async with running(app) as client:
            await keep_outbox_history(app.state.engine)
            users = [await register(client) for _ in range(2)]
            sidecar.stop()
            await write_tasks(client, users, rounds=3)  # the api keeps accepting writes
            await asyncio.sleep(1)
            expected = await outbox_ids(app)
            sidecar.start()
            total = sum(len(ids) for ids in expected.values())
            records = await asyncio.to_thread(read_topic, kafka, topic, total)
    assert by_user(records, redelivered=True) == expected


async def test_a_30_second_broker_outage_loses_nothing_and_keeps_per_user_order(api_db, dapr, kafka, topic):
    token = secrets.token_hex(16)
    with dapr.sidecar("api", None, api_token=token) as sidecar:
        app = app_for(api_db, sidecar, topic, token)
        async with running(app) as client:
            await keep_outbox_history(app.state.engine)
            users = [await register(client) for _ in range(3)]
            await write_tasks(client, users, rounds=1)
            kafka.stop_broker()
            try:
                stop_at = time.monotonic() + 30
                rounds = 0
                while time.monotonic() < stop_at:  # continuous writes through the outage
                    await write_tasks(client, users, rounds=1)
                    rounds += 1
                    await asyncio.sleep(0.5)
            finally:
                await asyncio.to_thread(kafka.start_broker)
            await write_tasks(client, users, rounds=1)
            expected = await outbox_ids(app)
            total = sum(len(ids) for ids in expected.values())
            records = await asyncio.to_thread(read_topic, kafka, topic, total, 120)
    assert rounds >= 20
    assert by_user(records, redelivered=True) == expected
