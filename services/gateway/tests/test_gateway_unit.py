"""Unit tests (rung L0) of the gateway's pure logic: parsing deliveries, the replay buffer (LRU,
byte budget, dedupe window), the hub (owner-only fan-out, replay/resync, limits, slow clients,
shutdown) and the subscription list. No server, no engines."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from prometheus_client import CollectorRegistry
from todo_gateway.events import Event, MalformedEvent, from_delivery, sse_frame
from todo_gateway.hub import EVENT_OVERHEAD_BYTES, ConnectionLimitReached, Hub, ReplayBuffer, ShuttingDown
from todo_gateway.metrics import GatewayMetrics
from todo_gateway.settings import GatewaySettings
from todo_gateway.subscriber import subscriptions

pytestmark = pytest.mark.unit

ALICE = uuid.UUID("00000000-0000-4000-8000-00000000a11c")
BOB = uuid.UUID("00000000-0000-4000-8000-000000000b0b")


def event(user: uuid.UUID, n: int, size: int = 10) -> Event:
    return Event.make(f"e-{user.hex[-4:]}-{n}", "task.updated", user, {"n": n, "pad": "x" * size})


def value(metrics: GatewayMetrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def new_metrics() -> GatewayMetrics:
    return GatewayMetrics(CollectorRegistry())


def new_hub(max_connections: int = 100, queue_events: int = 8, per_user: int = 5) -> Hub:
    return Hub(
        ReplayBuffer(per_user, 100, 10 * 1024 * 1024),
        new_metrics(),
        max_connections=max_connections,
        queue_events=queue_events,
    )


def api_delivery(**overrides) -> bytes:
    """A CloudEvent as the api's relay publishes it and daprd delivers it (plus daprd's fields)."""
    event_id = str(uuid.uuid4())
    data = {
        "event_id": event_id,
        "type": "task.created",
        "user_id": str(ALICE),
        "task_id": str(uuid.uuid4()),
        "occurred_at": "2026-01-02T03:04:05.123456+00:00",
        "task": {"id": "t1", "title": "Buy milk"},
    }
    data.update(overrides.pop("data", {}))
    envelope = {
        "specversion": "1.0",
        "id": event_id,
        "source": "todo-api",
        "type": data.get("type"),
        "time": "2026-01-02T03:04:05.5+00:00",
        "datacontenttype": "application/json",
        "data": data,
        "topic": "task-events",
        "pubsubname": "pubsub-fanout",
        "traceid": "00-abc-def-01",
    }
    envelope.update(overrides)
    return json.dumps(envelope).encode()


# -- events ----------------------------------------------------------------------------------------


def test_api_delivery_becomes_an_sse_frame_of_the_payload():
    body = api_delivery()
    parsed = json.loads(body)
    event = from_delivery(body, "tasks")
    assert event.id == parsed["data"]["event_id"]
    assert event.type == "task.created"
    assert event.user_id == ALICE
    assert event.time == pytest.approx(1767323045.5)  # the CloudEvent time
    lines = event.wire.decode().split("\n")
    assert lines[0] == f"id: {event.id}"
    assert lines[1] == "event: task.created"
    assert lines[2].startswith("data: ")
    assert json.loads(lines[2][6:]) == parsed["data"]
    assert lines[3:] == ["", ""]  # one data line, then the blank line ending the event


def test_reminder_delivery_from_the_notifier():
    data = {
        "event_id": "r-1",
        "type": "reminder.due",
        "user_id": str(BOB),
        "task_id": "t9",
        "notification": {"message": "“Pay rent” is due at 10:00"},
    }
    event = from_delivery(
        json.dumps({"id": "ce-1", "type": "reminder.due", "data": data}).encode(), "reminders"
    )
    assert (event.id, event.type, event.user_id) == ("r-1", "reminder.due", BOB)
    assert "“Pay rent”" in event.wire.decode()  # UTF-8, not \u escapes


def test_event_time_falls_back_to_occurred_at_then_arrival():
    no_time = json.loads(api_delivery())
    del no_time["time"]
    assert from_delivery(json.dumps(no_time).encode(), "tasks").time == pytest.approx(1767323045.123456)
    del no_time["data"]["occurred_at"]
    import time

    assert abs(from_delivery(json.dumps(no_time).encode(), "tasks").time - time.time()) < 5


@pytest.mark.parametrize(
    ("body", "kind", "reason"),
    [
        (b"not json", "tasks", "not JSON"),
        (b"[1, 2]", "tasks", "not a JSON object"),
        (json.dumps({"data": 5}).encode(), "tasks", "data is not a JSON object"),
        (api_delivery(data={"user_id": "bob"}), "tasks", "user_id"),
        (api_delivery(data={"user_id": None}), "tasks", "user_id"),
        (api_delivery(data={"type": "task.exploded"}), "tasks", "type"),
        (api_delivery(data={"type": "reminder.due"}), "tasks", "type"),  # wrong topic for the type
        (api_delivery(), "reminders", "type"),
        (api_delivery(data={"task": None}), "tasks", "data.task"),
        (api_delivery(id="x" * 200, data={"event_id": None}), "tasks", "event id"),
        (api_delivery(data={"event_id": "a\nb"}), "tasks", "event id"),  # would break SSE framing
    ],
)
def test_malformed_deliveries_are_refused_with_a_reason(body, kind, reason):
    with pytest.raises(MalformedEvent, match=reason):
        from_delivery(body, kind)


def test_data_sent_as_a_json_string_is_accepted():
    envelope = json.loads(api_delivery())
    envelope["data"] = json.dumps(envelope["data"])
    assert from_delivery(json.dumps(envelope).encode(), "tasks").user_id == ALICE


def test_sse_frame_fields():
    assert sse_frame(retry=3000, comment="connected") == b": connected\nretry: 3000\n\n"
    assert sse_frame(id="1", event="resync", data="{}") == b"id: 1\nevent: resync\ndata: {}\n\n"


# -- replay buffer ---------------------------------------------------------------------------------


def test_buffer_keeps_the_newest_events_per_user_and_replays_after_an_id():
    buffer = ReplayBuffer(events_per_user=3, max_users=10, max_bytes=10**6)
    events = [event(ALICE, n) for n in range(5)]
    assert all(buffer.add(e) for e in events)
    assert buffer.ids(ALICE) == [e.id for e in events[2:]]
    assert buffer.since(ALICE, events[2].id) == events[3:]
    assert buffer.since(ALICE, events[4].id) == []
    assert buffer.since(ALICE, events[1].id) is None  # evicted: unknown
    assert buffer.since(BOB, events[4].id) is None  # not Bob's
    assert buffer.latest_id(ALICE) == events[4].id
    assert buffer.latest_id(BOB) is None


def test_buffer_dedupes_within_the_window():
    buffer = ReplayBuffer(events_per_user=3, max_users=10, max_bytes=10**6)
    first = event(ALICE, 1)
    assert buffer.add(first)
    assert not buffer.add(event(ALICE, 1))  # same id again
    assert buffer.add(event(BOB, 1)) is True  # ids are per user
    assert buffer.ids(ALICE) == [first.id]


def test_buffer_evicts_least_recently_active_users_by_count():
    buffer = ReplayBuffer(events_per_user=3, max_users=2, max_bytes=10**6)
    carol = uuid.uuid4()
    buffer.add(event(ALICE, 1))
    buffer.add(event(BOB, 1))
    buffer.add(event(ALICE, 2))  # Alice is now the most recent
    buffer.add(event(carol, 1))  # evicts Bob
    assert buffer.users == 2
    assert buffer.ids(BOB) == []
    assert len(buffer.ids(ALICE)) == 2


def test_buffer_keeps_within_its_byte_budget():
    buffer = ReplayBuffer(events_per_user=100, max_users=1000, max_bytes=20_000)
    users = [uuid.uuid4() for _ in range(50)]
    for n, user in enumerate(users):
        buffer.add(event(user, n, size=1000))
    assert buffer.bytes <= 20_000
    assert buffer.ids(users[-1])  # the newest survive
    assert not buffer.ids(users[0])
    kept = [e for user in users for e in buffer.since_start(user)]
    assert sum(len(e.wire) + EVENT_OVERHEAD_BYTES for e in kept) == buffer.bytes


# -- hub -------------------------------------------------------------------------------------------


async def test_events_reach_only_their_owners_connections():
    hub = new_hub()
    alice_tab1, alice_tab2, bob = hub.open(ALICE), hub.open(ALICE), hub.open(BOB)
    e = event(ALICE, 1)
    assert hub.publish(e)
    assert list(alice_tab1.queue) == [e]
    assert list(alice_tab2.queue) == [e]
    assert not bob.queue


async def test_duplicate_delivery_has_one_effect():
    hub = new_hub()
    tab = hub.open(ALICE)
    assert hub.publish(event(ALICE, 1))
    assert not hub.publish(event(ALICE, 1))
    assert len(tab.queue) == 1
    assert value(hub.metrics, "gateway_events_dropped_total", reason="duplicate") == 1


async def test_reconnect_with_a_known_id_replays_what_was_missed():
    hub = new_hub(per_user=5)
    events = [event(ALICE, n) for n in range(4)]
    for e in events:
        hub.publish(e)
    tab = hub.open(ALICE, last_event_id=events[1].id)
    assert tab.replay == events[2:]
    assert not tab.resync
    assert value(hub.metrics, "gateway_replays_total", outcome="replayed") == 1
    # Live events after the reconnect go to the queue, after the replay: nothing lost, nothing twice.
    later = event(ALICE, 9)
    hub.publish(later)
    assert list(tab.queue) == [later]


async def test_reconnect_with_an_unknown_id_asks_for_a_resync():
    hub = new_hub(per_user=2)
    events = [event(ALICE, n) for n in range(4)]
    for e in events:
        hub.publish(e)
    tab = hub.open(ALICE, last_event_id=events[0].id)  # evicted
    assert tab.resync and tab.replay == []
    assert tab.resync_id == events[-1].id  # a cursor the client can reconnect with
    stranger = hub.open(BOB, last_event_id="from-another-replica")
    assert stranger.resync and stranger.resync_id is None
    assert value(hub.metrics, "gateway_replays_total", outcome="resync") == 2


async def test_connection_limit_and_release():
    hub = new_hub(max_connections=2)
    first = hub.open(ALICE)
    hub.open(BOB)
    with pytest.raises(ConnectionLimitReached):
        hub.open(ALICE)
    hub.close(first)
    hub.close(first)  # idempotent
    assert hub.open_count == 1
    hub.open(ALICE)
    assert value(hub.metrics, "gateway_connections_rejected_total", reason="limit") == 1
    assert value(hub.metrics, "gateway_connections_open") == 2
    assert value(hub.metrics, "gateway_connections_closed_total", reason="client") == 1


async def test_a_full_queue_cuts_that_client_off_and_nobody_else():
    hub = new_hub(queue_events=3)
    slow, fast = hub.open(ALICE), hub.open(ALICE)
    aborted = []
    slow.abort = lambda: aborted.append(True)
    for n in range(4):
        hub.publish(event(ALICE, n))
        fast.queue.clear()  # the fast client keeps up
    assert aborted == [True]
    assert slow.closed == "slow_client"
    assert not slow.queue
    assert hub.connections_of(ALICE) == {fast}
    hub.publish(event(ALICE, 10))
    assert len(fast.queue) == 1
    assert value(hub.metrics, "gateway_events_dropped_total", reason="slow_client") == 4  # 3 queued + 1
    assert value(hub.metrics, "gateway_connections_closed_total", reason="slow_client") == 1


async def test_shutdown_ends_streams_and_refuses_new_ones():
    hub = new_hub()
    tab = hub.open(ALICE)
    waiter = asyncio.create_task(tab.next_events())
    await asyncio.sleep(0)
    hub.shutdown()
    await asyncio.wait_for(waiter, 1)
    assert tab.closed == "shutdown"
    with pytest.raises(ShuttingDown):
        hub.open(BOB)
    hub.close(tab)
    assert value(hub.metrics, "gateway_connections_closed_total", reason="shutdown") == 1


async def test_next_events_wakes_on_publish():
    hub = new_hub()
    tab = hub.open(ALICE)
    waiter = asyncio.create_task(tab.next_events())
    await asyncio.sleep(0.01)
    assert not waiter.done()
    hub.publish(event(ALICE, 1))
    await asyncio.wait_for(waiter, 1)


def test_buffer_gauges_follow_the_buffer():
    hub = new_hub()
    hub.publish(event(ALICE, 1))
    assert value(hub.metrics, "gateway_replay_buffer_users") == 1
    assert value(hub.metrics, "gateway_replay_buffer_bytes") == hub.buffer.bytes > 0


# -- subscriptions ---------------------------------------------------------------------------------


def test_subscriptions_follow_the_settings():
    settings = GatewaySettings(
        environment="test", pubsub_name="ps", task_events_topic="te-1", reminders_topic="rm-1"
    )
    subs = {s["topic"]: s for s in subscriptions(settings)}
    assert subs["te-1"] == {
        "pubsubname": "ps",
        "topic": "te-1",
        "route": "/dapr/events/tasks",
        "deadLetterTopic": "task-events-dead-letter",
    }
    assert subs["rm-1"]["route"] == "/dapr/events/reminders"
    assert subs["rm-1"]["deadLetterTopic"] == "reminders-dead-letter"
    defaults = GatewaySettings(environment="test")
    assert defaults.pubsub_name == "pubsub-fanout"
    assert (defaults.task_events_topic, defaults.reminders_topic) == ("task-events", "reminders")
