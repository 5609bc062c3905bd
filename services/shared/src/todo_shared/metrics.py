"""Prometheus metrics: one registry per app, HTTP metrics labelled by route template.

Public API:

- ``HttpMetrics(registry)``: the HTTP metrics every service exports:
  ``http_requests_total{method,route,status}``,
  ``http_request_errors_total{method,route,status}`` (5xx and unhandled exceptions),
  ``http_request_duration_seconds{method,route,status}`` (histogram) and
  ``http_requests_in_progress{method}``. ``route`` is the route TEMPLATE
  (``/api/v1/tasks/{task_id}``), ``unmatched`` when no route matched; never a raw path.
- ``new_registry()``: a CollectorRegistry with the process, platform and GC collectors.
- ``metrics_response(registry)``: the text exposition (``GET /metrics``).

A service adds its own metrics to ``app.state.registry`` (e.g. the api's outbox gauges).
Separate registries keep several app instances in one process (tests) independent.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from starlette.responses import Response

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
UNMATCHED_ROUTE = "unmatched"


def new_registry() -> CollectorRegistry:
    disable_created_metrics()  # no *_created series: they double the series count for nothing
    registry = CollectorRegistry(auto_describe=True)
    for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
        registry.register(collector)
    return registry


class HttpMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "http_requests_total",
            "HTTP requests answered, by route template and status code.",
            ("method", "route", "status"),
            registry=registry,
        )
        self.errors = Counter(
            "http_request_errors_total",
            "HTTP requests answered with a server error (5xx), by route template and status code.",
            ("method", "route", "status"),
            registry=registry,
        )
        self.latency = Histogram(
            "http_request_duration_seconds",
            "Time to answer an HTTP request, by route template and status code.",
            ("method", "route", "status"),
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.in_progress = Gauge(
            "http_requests_in_progress",
            "HTTP requests being answered.",
            ("method",),
            registry=registry,
        )

        # Label children by label values: ``labels()`` costs a lock and a dict build per call,
        # and every request would pay it three times. Bounded like the series themselves.
        self._children: dict[tuple[str, str, int], tuple[Any, Any, Any]] = {}
        self._in_progress: dict[str, Any] = {}

    def in_progress_of(self, method: str) -> Any:
        child = self._in_progress.get(method)
        if child is None:
            child = self._in_progress[method] = self.in_progress.labels(method)
        return child

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        children = self._children.get(key)
        if children is None:
            code = str(status)
            children = self._children[key] = (
                self.requests.labels(method, route, code),
                self.latency.labels(method, route, code),
                self.errors.labels(method, route, code) if status >= 500 else None,
            )
        requests, latency, errors = children
        requests.inc()
        latency.observe(seconds)
        if errors is not None:
            errors.inc()


def metrics_response(registry: CollectorRegistry) -> Response:
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
