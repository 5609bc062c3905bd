"""The gateway's Prometheus metrics (on the app's registry, next to the shared HTTP metrics).

- ``gateway_connections_open``: SSE streams open on this replica.
- ``gateway_connections_rejected_total{reason}``: ``limit`` (503, replica full),
  ``shutting_down`` (503 during a drain).
- ``gateway_connections_closed_total{reason}``: ``client`` (went away), ``slow_client``
  (queue overflow or a write not taken within the send timeout), ``shutdown``.
- ``gateway_events_received_total{kind}``: deliveries from the sidecar (``tasks``, ``reminders``).
- ``gateway_events_delivered_total``: events written to a stream (one per stream).
- ``gateway_events_dropped_total{reason}``: ``duplicate`` (same event id again: no effect),
  ``malformed`` (answered DROP: dead-letter topic), ``slow_client`` (events discarded with a
  cut-off stream's queue).
- ``gateway_delivery_lag_seconds``: now - event time, when a live event is written to a stream
  (event time: the CloudEvent's ``time``, for the api's events the outbox commit time).
- ``gateway_replays_total{outcome}``: reconnects with ``Last-Event-ID``: ``replayed`` (the id
  was in the buffer), ``resync`` (unknown id: the client is told to re-read).
- ``gateway_replayed_events_total``: events sent from the buffer.
- ``gateway_replay_buffer_users`` / ``gateway_replay_buffer_bytes``: what the buffer holds.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        registry = registry if registry is not None else CollectorRegistry()
        self.registry = registry
        self.open = Gauge("gateway_connections_open", "SSE streams open on this replica.", registry=registry)
        self.rejected = Counter(
            "gateway_connections_rejected_total",
            "SSE connections refused with 503, by reason (limit, shutting_down).",
            ("reason",),
            registry=registry,
        )
        self.closed = Counter(
            "gateway_connections_closed_total",
            "SSE streams ended, by reason (client, slow_client, shutdown).",
            ("reason",),
            registry=registry,
        )
        self.received = Counter(
            "gateway_events_received_total",
            "Events delivered by the Dapr sidecar, by kind (tasks, reminders).",
            ("kind",),
            registry=registry,
        )
        self.delivered = Counter(
            "gateway_events_delivered_total", "Events written to an SSE stream.", registry=registry
        )
        self.dropped = Counter(
            "gateway_events_dropped_total",
            "Events not forwarded, by reason (duplicate, malformed, slow_client).",
            ("reason",),
            registry=registry,
        )
        self.lag = Histogram(
            "gateway_delivery_lag_seconds",
            "From the event's time to its write to an SSE stream (live events).",
            buckets=LAG_BUCKETS,
            registry=registry,
        )
        self.replays = Counter(
            "gateway_replays_total",
            "Reconnects carrying Last-Event-ID, by outcome (replayed, resync).",
            ("outcome",),
            registry=registry,
        )
        self.replayed_events = Counter(
            "gateway_replayed_events_total", "Events sent from the replay buffer.", registry=registry
        )
        self.buffer_users = Gauge(
            "gateway_replay_buffer_users",
            "Users whose recent events the replay buffer holds.",
            registry=registry,
        )
        self.buffer_bytes = Gauge(
            "gateway_replay_buffer_bytes", "Bytes of SSE frames the replay buffer holds.", registry=registry
        )
        # Pre-create the labelled series so dashboards see zeros, not gaps.
        for reason in ("limit", "shutting_down"):
            self.rejected.labels(reason)
        for reason in ("client", "slow_client", "shutdown"):
            self.closed.labels(reason)
        for kind in ("tasks", "reminders"):
            self.received.labels(kind)
        for reason in ("duplicate", "malformed", "slow_client"):
            self.dropped.labels(reason)
        for outcome in ("replayed", "resync"):
            self.replays.labels(outcome)
