"""Integration tests (rung L1: the real HTTP stack) of the gateway's endpoints: a real uvicorn
serving the gateway app, real SSE clients (httpx streaming, and a raw socket for a client that
stops reading), deliveries POSTed to the subscription routes exactly as daprd sends them. Dapr and
Kafka themselves are in test_gateway_dapr.py."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
import uuid

import httpx
import pytest
from gateway_testlib import (
    APP_TOKEN,
    JWT_KEY,
    ServiceProcess,
    cloud_event,
    reminder_event,
    sse,
    task_event,
    token_for,
)
from todo_shared.app import mark_shutting_down

pytestmark = pytest.mark.integration

EVENTS = "/api/v1/events"
DAPR = {"dapr-api-token": APP_TOKEN, "content-type": "application/cloudevents+json"}


async def deliver(client: httpx.AsyncClient, base: str, data: dict, route: str = "tasks") -> str:
    topic = "task-events" if route == "tasks" else "reminders"
    response = await client.post(
        f"{base}/dapr/events/{route}", content=json.dumps(cloud_event(data, topic)), headers=DAPR
    )
    assert response.status_code == 200, response.text
    return response.json()["status"]


async def test_events_reach_every_stream_of_their_owner_and_nobody_else(gateway, client):
    alice, bob = uuid.uuid4(), uuid.uuid4()
    url = gateway.url + EVENTS
    async with (
        sse(client, url, token=token_for(alice)) as alice_bearer,
        sse(client, url, cookie=token_for(alice)) as alice_cookie,
        sse(client, url, token=token_for(bob)) as bob_stream,
    ):
        created = task_event(alice, "task.created", title="Alice's task")
        assert await deliver(client, gateway.url, created) == "SUCCESS"
        for stream in (alice_bearer, alice_cookie):
            frame = await stream.next_event()
            assert (frame.id, frame.event) == (created["event_id"], "task.created")
            assert frame.json() == created
        reminder = reminder_event(bob)
        assert await deliver(client, gateway.url, reminder, "reminders") == "SUCCESS"
        frame = await bob_stream.next_event()  # Bob's first event is his own, not Alice's
        assert (frame.id, frame.event) == (reminder["event_id"], "reminder.due")
        assert frame.json()["notification"]["message"] == reminder["notification"]["message"]
        await alice_bearer.expect_no_event(0.3)
    assert gateway.metric("gateway_events_delivered_total") == 3
    assert gateway.metric("gateway_delivery_lag_seconds_count") == 3


async def test_stream_starts_with_a_retry_hint_and_sends_heartbeats(gateway_factory, client):
    gateway = gateway_factory(heartbeat_seconds=0.2, retry_milliseconds=2500)
    user = uuid.uuid4()
    async with sse(client, gateway.url + EVENTS, token=token_for(user)) as stream:
        assert stream.response.headers["content-type"].startswith("text/event-stream")
        assert stream.response.headers["cache-control"] == "no-store"
        assert stream.response.headers["x-accel-buffering"] == "no"
        first = await stream.next_frame()
        assert first.retry == 2500 and first.comments == ["connected"] and not first.is_event
        started = time.monotonic()
        beats = [await stream.next_frame(2) for _ in range(3)]
        assert all(beat.comments == [""] and not beat.is_event for beat in beats)
        assert time.monotonic() - started < 1.5


async def test_reconnect_with_last_event_id_replays_what_was_missed(gateway, client):
    user = uuid.uuid4()
    url = gateway.url + EVENTS
    sent = [task_event(user, title=f"task {n}") for n in range(4)]
    async with sse(client, url, token=token_for(user)) as stream:
        await deliver(client, gateway.url, sent[0])
        seen = await stream.next_event()
    # The tab was away while three more events happened.
    for data in sent[1:]:
        await deliver(client, gateway.url, data)
    async with sse(client, url, token=token_for(user), last_event_id=seen.id) as stream:
        replayed = await stream.events(3)
        assert [f.id for f in replayed] == [d["event_id"] for d in sent[1:]]
        live = task_event(user, "task.deleted")
        await deliver(client, gateway.url, live)
        assert (await stream.next_event()).id == live["event_id"]
        await stream.expect_no_event(0.2)
    assert gateway.metric("gateway_replays_total", outcome="replayed") == 1
    assert gateway.metric("gateway_replayed_events_total") == 3


async def test_unknown_last_event_id_tells_the_client_to_resync(gateway_factory, client):
    gateway = gateway_factory(replay_events_per_user=2)
    user = uuid.uuid4()
    url = gateway.url + EVENTS
    sent = [task_event(user) for _ in range(3)]
    for data in sent:
        await deliver(client, gateway.url, data)
    # sent[0] was evicted from this user's buffer of 2.
    async with sse(client, url, token=token_for(user), last_event_id=sent[0]["event_id"]) as stream:
        frame = await stream.next_event()
        assert frame.event == "resync"
        assert frame.json() == {"reason": "unknown-last-event-id"}
        assert frame.id == sent[-1]["event_id"]  # the cursor to reconnect with from now on
        await stream.expect_no_event(0.2)
    # An id this replica never saw (another replica's, or from before a restart): resync without id.
    stranger = uuid.uuid4()
    async with sse(client, url, token=token_for(stranger), last_event_id=str(uuid.uuid4())) as stream:
        frame = await stream.next_event()
        assert frame.event == "resync" and frame.id is None
    assert gateway.metric("gateway_replays_total", outcome="resync") == 2


async def test_duplicate_delivery_has_one_effect(gateway, client):
    user = uuid.uuid4()
    async with sse(client, gateway.url + EVENTS, token=token_for(user)) as stream:
        data = task_event(user, "task.completed")
        assert await deliver(client, gateway.url, data) == "SUCCESS"
        assert await deliver(client, gateway.url, data) == "SUCCESS"  # redelivered: acknowledged again
        after = task_event(user)
        await deliver(client, gateway.url, after)
        frames = await stream.events(2)
        assert [f.id for f in frames] == [data["event_id"], after["event_id"]]
    assert gateway.metric("gateway_events_dropped_total", reason="duplicate") == 1


async def test_malformed_deliveries_are_dropped_for_the_dead_letter_topic(gateway, client):
    route = gateway.url + "/dapr/events/tasks"
    not_json = await client.post(route, content=b"{nope", headers=DAPR)
    assert not_json.json() == {"status": "DROP"}
    bad_user = cloud_event({**task_event(uuid.uuid4()), "user_id": "someone"})
    assert (await client.post(route, json=bad_user, headers=DAPR)).json() == {"status": "DROP"}
    reminder_on_tasks = cloud_event(reminder_event(uuid.uuid4()))
    assert (await client.post(route, json=reminder_on_tasks, headers=DAPR)).json() == {"status": "DROP"}
    assert gateway.metric("gateway_events_dropped_total", reason="malformed") == 3
    assert gateway.metric("gateway_events_received_total", kind="tasks") == 3


async def test_dapr_routes_check_the_app_token(gateway, client):
    subscribe = await client.get(gateway.url + "/dapr/subscribe")
    assert subscribe.status_code == 401
    assert subscribe.headers["content-type"] == "application/problem+json"
    wrong = await client.get(gateway.url + "/dapr/subscribe", headers={"dapr-api-token": "wrong"})
    assert wrong.status_code == 401
    ok = await client.get(gateway.url + "/dapr/subscribe", headers={"dapr-api-token": APP_TOKEN})
    assert ok.status_code == 200
    assert {s["topic"] for s in ok.json()} == {"task-events", "reminders"}
    assert all(s["pubsubname"] == "pubsub-fanout" and s["deadLetterTopic"] for s in ok.json())
    data = cloud_event(task_event(uuid.uuid4()))
    unsigned = await client.post(gateway.url + "/dapr/events/tasks", json=data)
    assert unsigned.status_code == 401


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Bearer not-a-jwt",
        "Bearer " + token_for(uuid.uuid4(), key="another-key-of-at-least-32-characters!!"),
        "Basic dXNlcjpwYXNz",
    ],
    ids=["missing", "malformed", "other-key", "basic"],
)
async def test_missing_or_bad_token_is_a_401_problem(gateway, client, authorization):
    headers = {"Authorization": authorization} if authorization else {}
    response = await client.get(gateway.url + EVENTS, headers=headers)
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.json()["status"] == 401 and response.json()["detail"]


async def test_connection_limit_answers_503_with_retry_after(gateway_factory, client):
    gateway = gateway_factory(max_connections=2, busy_retry_after_seconds=7)
    url = gateway.url + EVENTS
    user = uuid.uuid4()
    async with sse(client, url, token=token_for(user)) as first, sse(client, url, token=token_for(user)):
        refused = await client.get(url, headers={"Authorization": f"Bearer {token_for(user)}"})
        assert refused.status_code == 503
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.headers["retry-after"] == "7"
        assert "try again" in refused.json()["detail"]
        await first.aclose()
        deadline = time.monotonic() + 5
        while gateway.metric("gateway_connections_open") > 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        async with sse(client, url, token=token_for(user)) as third:  # the slot was freed
            await third.next_frame()
    assert gateway.metric("gateway_connections_rejected_total", reason="limit") == 1


def _stalled_client(port: int, token: str) -> socket.socket:
    """A real client that opens a stream, reads the response head and then stops reading."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window fills quickly
    sock.connect(("127.0.0.1", port))
    request = (
        f"GET {EVENTS} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n"
        f"Authorization: Bearer {token}\r\n\r\n"
    )
    sock.sendall(request.encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 200"), head
    return sock


def _drain_until_closed(sock: socket.socket, timeout: float) -> int:
    sock.settimeout(timeout)
    total = 0
    while chunk := sock.recv(1 << 16):
        total += len(chunk)
    return total


async def test_slow_client_is_cut_off_while_a_fast_one_keeps_receiving(gateway_factory, client):
    gateway = gateway_factory(connection_queue_events=32)
    user = uuid.uuid4()
    stalled = await asyncio.to_thread(_stalled_client, gateway.server.port, token_for(user))
    try:
        async with sse(client, gateway.url + EVENTS, token=token_for(user)) as fast:
            sent = []
            received = []
            for n in range(400):  # ~12 MB: far more than the stalled socket's buffers and queue hold
                data = task_event(user, title=f"big {n}", description="x" * 30_000)
                sent.append(data["event_id"])
                await deliver(client, gateway.url, data)
                while not fast.frames.empty():
                    frame = await fast.next_frame()
                    if frame.is_event:
                        received.append(frame.id)
            received += [f.id for f in await fast.events(len(sent) - len(received), timeout=30)]
            assert received == sent  # every event, in order, while the other client was stalled
            assert gateway.metric("gateway_connections_closed_total", reason="slow_client") == 1
            assert gateway.metric("gateway_events_dropped_total", reason="slow_client") >= 1
            assert gateway.metric("gateway_connections_open") == 1  # the fast one
            assert gateway.hub.connections_of(user) != set()
        # The stalled client, once it reads again, gets what was already written, then the end.
        taken = await asyncio.to_thread(_drain_until_closed, stalled, 10)
        assert taken < 30_000 * 400
    finally:
        stalled.close()


async def test_a_write_the_client_does_not_take_in_time_cuts_it_off(gateway_factory, client, caplog):
    # A queue too long to overflow here: what ends the stalled stream is the send timeout.
    gateway = gateway_factory(connection_queue_events=100_000, send_timeout_seconds=0.5)
    user = uuid.uuid4()
    stalled = await asyncio.to_thread(_stalled_client, gateway.server.port, token_for(user))
    try:
        deadline = time.monotonic() + 30
        while not gateway.metric("gateway_connections_closed_total", reason="slow_client"):
            assert time.monotonic() < deadline, "the stalled stream was never cut off"
            await deliver(client, gateway.url, task_event(user, description="y" * 60_000))
        assert gateway.metric("gateway_connections_open") == 0
        async with sse(client, gateway.url + EVENTS, token=token_for(user)) as again:  # still serving
            await again.next_frame()
        await asyncio.to_thread(_drain_until_closed, stalled, 10)
    finally:
        stalled.close()
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert not errors, [r.getMessage() for r in errors]


async def test_shutdown_ends_open_streams_and_refuses_new_ones(gateway, client):
    user = uuid.uuid4()
    url = gateway.url + EVENTS
    async with sse(client, url, token=token_for(user)) as stream:
        await stream.next_frame()
        started = time.monotonic()
        mark_shutting_down(gateway.app)
        await stream.wait_ended(3)
        assert stream.error is None  # a clean end of the response, not a broken connection
        assert time.monotonic() - started < 1.0
    refused = await client.get(url, headers={"Authorization": f"Bearer {token_for(user)}"})
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "1"
    ready = await client.get(gateway.url + "/readyz")
    assert ready.status_code == 503
    assert gateway.metric("gateway_connections_closed_total", reason="shutdown") == 1


async def test_sigterm_ends_streams_and_the_process_exits(client):
    gateway = await asyncio.to_thread(
        ServiceProcess.start, "sigterm", {"TODO_SHUTDOWN_TIMEOUT_SECONDS": "20"}
    )
    try:
        user = uuid.uuid4()
        async with sse(client, gateway.url + EVENTS, token=token_for(user)) as stream:
            await stream.next_frame()
            started = time.monotonic()
            gateway.process.send_signal(15)
            await stream.wait_ended(5)
            code = await asyncio.to_thread(gateway.process.wait, 10)
            elapsed = time.monotonic() - started
    finally:
        await asyncio.to_thread(gateway.stop)
    assert code == -15, gateway.log_tail()  # uvicorn re-raises SIGTERM: exit as the signal says
    assert elapsed < 3, f"took {elapsed:.1f}s: the drain waited for the stream"
    assert "ending open streams" in gateway.log_path.read_text()


async def test_metrics_and_health(gateway, client):
    user = uuid.uuid4()
    async with sse(client, gateway.url + EVENTS, token=token_for(user)) as stream:
        await deliver(client, gateway.url, task_event(user))
        await stream.next_event()
    # The stream's own request is counted when it ends (the server notices the client left).
    deadline = time.monotonic() + 5
    while gateway.metric("gateway_connections_open") and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    text = (await client.get(gateway.url + "/metrics")).text
    for name in (
        "gateway_connections_open",
        "gateway_events_received_total",
        "gateway_events_delivered_total",
        "gateway_events_dropped_total",
        "gateway_delivery_lag_seconds_bucket",
        "gateway_replays_total",
        'http_requests_total{method="GET",route="/api/v1/events",status="200"}',
    ):
        assert name in text, name
    assert (await client.get(gateway.url + "/healthz")).json()["service"] == "gateway"
    assert (await client.get(gateway.url + "/readyz")).status_code == 200


def test_console_script_is_installed():
    done = subprocess.run(
        [sys.executable, "-c", "import importlib.metadata as m; print(m.entry_points(name='todo-gateway'))"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "todo_gateway.main:run" in done.stdout
    assert JWT_KEY  # the tests sign with their own key, as the api would with the shared one
