"""The gateway's Dapr pub/sub subscriptions (programmatic) and the routes the sidecar delivers to.

- ``GET /dapr/subscribe``: ``TODO_TASK_EVENTS_TOPIC`` -> ``POST /dapr/events/tasks`` and
  ``TODO_REMINDERS_TOPIC`` -> ``POST /dapr/events/reminders``, both on component
  ``TODO_PUBSUB_NAME`` (``pubsub-fanout``: its ``consumerID: "{uuid}"`` gives every replica its
  own consumer group, so every replica receives every event), each with its dead-letter topic.
- A delivery (a CloudEvent) is answered ``{"status": "SUCCESS"}`` once the event is queued on
  its owner's streams here (or recognised as a duplicate: same effect once), ``{"status":
  "DROP"}`` when it is malformed (the sidecar moves it to the dead-letter topic; a redelivery
  cannot fix it) and ``{"status": "RETRY"}`` on an unexpected error.
- Both routes require the sidecar's ``dapr-api-token`` when ``APP_API_TOKEN`` is set.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Depends, Request
from todo_shared.auth import require_dapr_app_token

from todo_gateway.events import MalformedEvent, from_delivery
from todo_gateway.hub import Hub
from todo_gateway.settings import GatewaySettings

log = logging.getLogger("todo.gateway.subscriber")

TASKS_ROUTE = "/dapr/events/tasks"
REMINDERS_ROUTE = "/dapr/events/reminders"

router = APIRouter(include_in_schema=False, dependencies=[Depends(require_dapr_app_token)])


def subscriptions(settings: GatewaySettings) -> list[dict[str, Any]]:
    return [
        {
            "pubsubname": settings.pubsub_name,
            "topic": settings.task_events_topic,
            "route": TASKS_ROUTE,
            "deadLetterTopic": settings.task_events_dead_letter_topic,
        },
        {
            "pubsubname": settings.pubsub_name,
            "topic": settings.reminders_topic,
            "route": REMINDERS_ROUTE,
            "deadLetterTopic": settings.reminders_dead_letter_topic,
        },
    ]


@router.get("/dapr/subscribe")
async def dapr_subscribe(request: Request) -> list[dict[str, Any]]:
    return subscriptions(request.app.state.settings)


async def _deliver(request: Request, kind: str) -> dict[str, str]:
    hub: Hub = request.app.state.hub
    hub.metrics.received.labels(kind).inc()
    body = await request.body()
    try:
        event = from_delivery(body, kind)
    except MalformedEvent as exc:
        hub.metrics.dropped.labels("malformed").inc()
        log.warning("malformed event dropped (dead-letter topic)", extra={"kind": kind, "reason": str(exc)})
        return {"status": "DROP"}
    try:
        hub.publish(event)
    except Exception:
        log.exception("could not forward an event; asking the sidecar to retry", extra={"kind": kind})
        return {"status": "RETRY"}
    return {"status": "SUCCESS"}


@router.post(TASKS_ROUTE)
async def deliver_task_event(request: Request) -> dict[str, str]:
    return await _deliver(request, "tasks")


@router.post(REMINDERS_ROUTE)
async def deliver_reminder(request: Request) -> dict[str, str]:
    return await _deliver(request, "reminders")
