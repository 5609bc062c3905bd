"""The Dapr client against a real HTTP server standing in for the sidecar (rung L1: real
sockets, the production client code path; only daprd itself is stood in for)."""

from __future__ import annotations

import asyncio
import re
import secrets

import httpx
import pytest
from fastapi import APIRouter, Request
from todo_shared.app import add_readiness_check, create_app
from todo_shared.dapr import CLOUDEVENTS_JSON, DaprClient, DaprError, cloud_event
from todo_shared.logs import request_id_var
from todo_shared.settings import ServiceSettings
from todo_shared.testing import DaprSidecarStandIn, ServerThread, dapr_sidecar_standin

pytestmark = pytest.mark.integration

SIDECAR_TOKEN = secrets.token_urlsafe(24)


@pytest.fixture(scope="module")
def sidecar():
    with dapr_sidecar_standin(api_token=SIDECAR_TOKEN) as standin:
        yield standin


@pytest.fixture(autouse=True)
def reset(sidecar):
    sidecar.clear()
    sidecar.recover()
    sidecar.set_healthy(True)


@pytest.fixture
async def client(sidecar):
    async with DaprClient(sidecar.port, api_token=SIDECAR_TOKEN) as dapr:
        yield dapr


async def test_publish_sends_json_partition_key_metadata_and_token(sidecar, client):
    token = request_id_var.set("req-42")
    try:
        await client.publish(
            "pubsub", "task-events", {"a": 1}, partition_key="user-1", metadata={"ttlInSeconds": "60"}
        )
    finally:
        request_id_var.reset(token)
    [message] = sidecar.published
    assert (message.pubsub, message.topic) == ("pubsub", "task-events")
    assert message.partition_key == "user-1"
    assert message.metadata == {"partitionKey": "user-1", "ttlInSeconds": "60"}
    assert message.content_type == "application/json"
    assert message.data == {"a": 1}
    assert message.headers["dapr-api-token"] == SIDECAR_TOKEN
    assert message.headers["x-request-id"] == "req-42"


async def test_publish_a_cloud_event_keeps_its_id(sidecar, client):
    event = cloud_event("evt-1", "task.created", "todo-api", {"x": 1}, subject="task-1")
    await client.publish("pubsub", "task-events", event, content_type=CLOUDEVENTS_JSON)
    [message] = sidecar.published
    assert message.content_type == CLOUDEVENTS_JSON
    assert message.data["id"] == "evt-1"
    assert message.data["specversion"] == "1.0"
    assert message.data["subject"] == "task-1"


async def test_publish_failure_raises_with_the_status(sidecar, client):
    sidecar.fail_publishes(503)
    with pytest.raises(DaprError) as caught:
        await client.publish("pubsub", "t", {})
    assert caught.value.status == 503
    assert sidecar.published == []


async def test_a_wrong_token_is_refused(sidecar):
    async with DaprClient(sidecar.port, api_token=secrets.token_hex(8)) as dapr:
        with pytest.raises(DaprError) as caught:
            await dapr.publish("pubsub", "t", {})
    assert caught.value.status == 401


async def test_unreachable_sidecar_raises_without_status():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with DaprClient(port, timeout=1) as dapr:
        with pytest.raises(DaprError) as caught:
            await dapr.publish("pubsub", "t", {})
        assert caught.value.status is None
        assert not await dapr.healthy()


async def test_readiness_follows_the_sidecar_health(sidecar, client):
    assert await client.healthy()
    await client.readiness_check()
    sidecar.set_healthy(False)
    assert not await client.healthy()
    with pytest.raises(DaprError):
        await client.readiness_check()


async def test_readiness_endpoint_reports_the_sidecar(sidecar, client):
    app = create_app(ServiceSettings(environment="test"))
    add_readiness_check(app, "dapr", client.readiness_check)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://svc") as http:
        assert (await http.get("/readyz")).status_code == 200
        sidecar.set_healthy(False)
        response = await http.get("/readyz")
    assert response.status_code == 503
    assert response.json()["failed"] == ["dapr"]


async def test_invoke_reaches_the_target_app_through_the_sidecar(sidecar, client):
    router = APIRouter()

    @router.post("/api/v1/echo")
    async def echo(request: Request, payload: dict) -> dict:
        return {
            "payload": payload,
            "query": dict(request.query_params),
            "rid": request.headers.get("x-request-id"),
        }

    with ServerThread(create_app(ServiceSettings(environment="test"), routers=[router])) as target:
        sidecar.register_app("target", target.url)
        response = await client.invoke("target", "POST", "/api/v1/echo", json={"k": "v"}, params={"q": "1"})
    assert response.status_code == 200
    assert response.json()["payload"] == {"k": "v"}
    assert response.json()["query"] == {"q": "1"}
    unknown = await client.invoke("nobody", "GET", "x")
    assert unknown.status_code == 500


def test_from_settings_is_none_without_a_sidecar_port():
    assert DaprClient.from_settings(ServiceSettings(environment="test")) is None
    with_port = DaprClient.from_settings(ServiceSettings(environment="test", dapr_http_port=3500))
    assert with_port is not None
    assert with_port.base_url == "http://127.0.0.1:3500"


def test_standin_counts_attempts(sidecar):
    before = sidecar.publish_attempts
    sidecar.fail_publishes()
    httpx.post(f"{sidecar.url}/v1.0/publish/p/t", json={}, headers={"dapr-api-token": SIDECAR_TOKEN})
    assert sidecar.publish_attempts == before + 1
    assert isinstance(sidecar, DaprSidecarStandIn)


class RawSidecar:
    """A raw asyncio HTTP server answering canned responses, to pin down the connection handling."""

    def __init__(self, response: bytes, *, close_after_each: bool = False, delay: float = 0.0) -> None:
        self.response, self.close_after_each, self.delay = response, close_after_each, delay
        self.connections = 0
        self.requests: list[bytes] = []

    async def __aenter__(self) -> RawSidecar:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
                self.requests.append(head + await reader.readexactly(length))
                await asyncio.sleep(self.delay)
                writer.write(self.response)
                await writer.drain()
                if self.close_after_each:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def test_publish_reads_chunked_error_bodies():
    body = (
        b"HTTP/1.1 500 Internal Server Error\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nbroke\r\n3\r\nn!!\r\n0\r\n\r\n"
    )
    async with RawSidecar(body) as raw, DaprClient(raw.port) as dapr:
        with pytest.raises(DaprError, match="sidecar answered 500: broken!!") as caught:
            await dapr.publish("pubsub", "t", {"a": 1}, partition_key="user/1 2")
        assert caught.value.status == 500
        with pytest.raises(DaprError):
            await dapr.publish("pubsub", "t", {"a": 2})
    assert raw.connections == 1, "a chunked answer keeps the connection"
    assert raw.requests[0].startswith(
        b"POST /v1.0/publish/pubsub/t?metadata.partitionKey=user%2F1%202 HTTP/1.1"
    )
    assert raw.requests[0].endswith(b'{"a":1}')


async def test_a_connection_the_sidecar_closed_is_replaced_transparently():
    closing = RawSidecar(b"HTTP/1.1 204 No Content\r\n\r\n", close_after_each=True)
    async with closing as raw, DaprClient(raw.port) as dapr:
        for i in range(3):
            await dapr.publish("pubsub", "t", {"n": i})
            await asyncio.sleep(0.05)  # let the close arrive
    assert len(raw.requests) == 3, "each publish reached the sidecar exactly once"
    assert raw.connections == 3


async def test_connection_close_is_honoured():
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
    async with RawSidecar(answer) as raw, DaprClient(raw.port) as dapr:
        await dapr.publish("pubsub", "t", {})
        await dapr.publish("pubsub", "t", {})
    assert raw.connections == 2


async def test_a_slow_sidecar_times_out_without_a_retry():
    slow = RawSidecar(b"HTTP/1.1 204 No Content\r\n\r\n", delay=2)
    async with slow as raw, DaprClient(raw.port, timeout=0.3) as dapr:
        with pytest.raises(DaprError, match="TimeoutError"):
            await dapr.publish("pubsub", "t", {})
    assert len(raw.requests) == 1


async def test_a_connection_closed_as_the_publish_goes_out_is_retried_on_a_fresh_one():
    """The sidecar (like Go's http.Server at its idle timeout) closes a kept-alive connection
    just as the next request arrives: that publish goes out once more, on a new connection."""
    connections: list[int] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        index = len(connections)
        connections.append(0)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
                await reader.readexactly(length)
                connections[index] += 1
                if index == 0 and connections[index] == 2:
                    break  # closes without answering the second request
                writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with DaprClient(port) as dapr:
            await dapr.publish("pubsub", "t", {"n": 1})
            await dapr.publish("pubsub", "t", {"n": 2})
    finally:
        server.close()
    assert connections == [2, 1], "the second publish was sent again on a second connection"


async def test_publishes_share_one_kept_alive_connection_and_carry_the_token():
    async with RawSidecar(b"HTTP/1.1 204 No Content\r\n\r\n") as raw:
        async with DaprClient(raw.port, api_token=SIDECAR_TOKEN) as dapr:
            for i in range(3):
                await dapr.publish("pubsub", "t", {"n": i})
        async with DaprClient(raw.port) as anonymous:
            await anonymous.publish("pubsub", "t", {"n": 3})
    assert raw.connections == 2, "one connection per client, kept alive"
    for request in raw.requests[:3]:
        assert f"dapr-api-token: {SIDECAR_TOKEN}".encode() in request
    assert b"dapr-api-token" not in raw.requests[3], "no token configured: no header"


@pytest.mark.parametrize("answer", ["error", "timeout", "unreachable"])
async def test_publish_errors_carry_no_secret(answer):
    token = secrets.token_urlsafe(24)
    if answer == "unreachable":
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        sidecar = None
    else:
        response = b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 5\r\n\r\nbroke"
        sidecar = RawSidecar(response, delay=2 if answer == "timeout" else 0)
        port = (await sidecar.__aenter__()).port
    try:
        async with DaprClient(port, api_token=token, timeout=0.5) as dapr:
            with pytest.raises(DaprError) as caught:
                await dapr.publish("pubsub", "t", {"a": 1}, partition_key="user-1")
    finally:
        if sidecar is not None:
            await sidecar.__aexit__(None, None, None)
    error = caught.value
    assert error.status == (500 if answer == "error" else None)
    for text in (str(error), repr(error), repr(error.__context__), repr(error.__cause__)):
        assert token not in text
