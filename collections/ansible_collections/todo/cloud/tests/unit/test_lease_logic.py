"""The deploy lock's rules (module_utils/lease.py), without a cluster (rung L0)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from ansible_collections.todo.cloud.plugins.module_utils.lease import (
    CREATE,
    RENEW,
    TAKE,
    WAIT,
    LeaseView,
    decide,
    format_time,
    lease_body,
    parse_time,
)

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def view(holder="a", renewed=NOW, duration=60, transitions=0) -> LeaseView:
    return LeaseView(holder, renewed, duration, NOW - timedelta(minutes=5), transitions, "42", {})


@pytest.mark.parametrize(
    ("current", "step"),
    [
        (None, CREATE),
        (view(holder="me"), RENEW),
        (view(holder=None), TAKE),
        (view(renewed=NOW - timedelta(seconds=61)), TAKE),
        (view(renewed=None), TAKE),
        (view(renewed=NOW - timedelta(seconds=59)), WAIT),
    ],
)
def test_decide(current, step):
    assert decide(current, "me", NOW) == step


def test_renewing_keeps_acquire_time_and_transitions():
    current = view(holder="me", transitions=3)
    body = lease_body("todo-deploy", "me", 600, NOW, current=current, annotations={})
    assert body["spec"]["acquireTime"] == format_time(current.acquired)
    assert body["spec"]["renewTime"] == format_time(NOW)
    assert body["spec"]["leaseTransitions"] == 3
    assert body["metadata"]["resourceVersion"] == "42"


def test_taking_over_counts_a_transition_and_restarts_the_clock():
    body = lease_body(
        "todo-deploy", "me", 600, NOW, current=view(holder="other", transitions=1), annotations={}
    )
    assert body["spec"]["leaseTransitions"] == 2
    assert body["spec"]["acquireTime"] == format_time(NOW)


def test_micro_time_round_trips_and_describe_says_who_and_until_when():
    assert parse_time(format_time(NOW)) == NOW
    text = LeaseView("ci-1", NOW, 60, NOW, 0, "1", {"todo.cloud/version": "1.0.0"}).describe()
    assert text == (
        "held by ci-1 since 2026-11-26T12:00:00.000000Z until 2026-11-26T12:01:00.000000Z "
        "unless renewed (version=1.0.0)"
    )
