"""``todo-gateway``: serve the SSE gateway under uvicorn with graceful shutdown (todo_shared.server.run).

Module layout:

- ``app``: ``create_gateway_app`` (lifespan: sidecar readiness, ends streams on shutdown).
- ``settings``: ``GatewaySettings`` (env ``TODO_*`` plus Dapr's variables).
- ``stream``: ``GET /api/v1/events`` (sse-starlette), connection limit, slow-client cut-off.
- ``subscriber``: ``GET /dapr/subscribe`` and the delivery routes (SUCCESS / RETRY / DROP).
- ``hub``: connections per user, replay buffer (LRU), dedupe, fan-out. Pure logic.
- ``events``: a Dapr delivery -> ``Event`` (validated, SSE frame encoded once).
- ``metrics``: the gateway's Prometheus metrics.
"""

from __future__ import annotations

from todo_shared.server import run as run_service

from todo_gateway.app import create_gateway_app


def run() -> None:
    run_service(create_gateway_app)


if __name__ == "__main__":
    run()
