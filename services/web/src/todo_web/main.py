"""``todo-web``: serve the web UI under uvicorn with graceful shutdown (todo_shared.server.run)."""

from __future__ import annotations

from todo_shared.server import run as run_service

from todo_web.app import create_app


def run() -> None:
    run_service(create_app)


if __name__ == "__main__":
    run()
