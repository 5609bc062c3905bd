"""The outbox relay's backoff after failed publishes (rung L0)."""

from __future__ import annotations

import pytest
from api_testlib import make_settings
from prometheus_client import CollectorRegistry
from todo_api.outbox import OutboxMetrics, OutboxRelay

pytestmark = pytest.mark.unit


def test_backoff_is_exponential_with_jitter_and_capped():
    settings = make_settings(
        "postgresql://unused/db", outbox_backoff_base_seconds=1.0, outbox_backoff_max_seconds=8.0
    )
    relay = OutboxRelay(engine=None, dapr=None, settings=settings, metrics=OutboxMetrics(CollectorRegistry()))
    for failures, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (10, 8.0), (100, 8.0)]:
        relay.consecutive_failures = failures
        delays = {relay.backoff_delay() for _ in range(50)}
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(delays) > 1, "jittered"
