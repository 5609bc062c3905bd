"""The api service: the app factory and the ``todo-api`` command.

    todo-api                 serve (uvicorn, graceful shutdown on SIGTERM)
    todo-api serve
    todo-api migrate         upgrade the database to the newest revision, then exit
    todo-api migrate --revision <rev> | todo-api downgrade --revision <rev>

Module layout:

- ``app``: ``create_api_app`` (lifespan: engine, outbox relay, readiness checks).
- ``settings``: ``ApiSettings`` (env ``TODO_*`` plus Dapr's variables).
- ``tables``: the schema (SQLAlchemy Core); ``migrations/``: Alembic; ``migrate``: run them.
- ``db``: async engine (asyncpg) and readiness check.
- ``schemas``: request/response bodies and field rules.
- ``store``: data access; each task change writes its outbox event in the same transaction.
- ``outbox``: ``record_event`` and the ``OutboxRelay`` publishing through Dapr.
- ``recurrence``: next occurrence of a recurring task.
- ``passwords``: argon2id hashing off the event loop.
- ``routes/``: ``auth``, ``tasks``, ``tags`` routers; ``deps``: what they share (the store,
  hasher and settings from the request, ``json_response``).
"""

from __future__ import annotations

import argparse
import logging
import sys

from todo_shared.logs import configure_logging
from todo_shared.settings import SettingsError, load_settings

from todo_api.settings import ApiSettings

log = logging.getLogger("todo.api")


def run(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="todo-api", description="The Todo api service.")
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("serve", help="serve HTTP (the default)")
    up = commands.add_parser("migrate", help="upgrade the database schema, then exit")
    up.add_argument("--revision", default="head")
    down = commands.add_parser("downgrade", help="downgrade the database schema, then exit")
    down.add_argument("--revision", required=True)
    args = parser.parse_args(argv)

    if args.command in ("migrate", "downgrade"):
        configure_logging("INFO", "api")
        try:
            settings = load_settings(ApiSettings)
        except SettingsError as exc:
            log.error("%s", exc)
            sys.exit(2)
        configure_logging(settings.log_level, settings.service_name)
        from todo_api import migrate

        action = migrate.upgrade if args.command == "migrate" else migrate.downgrade
        action(settings.database_url.get_secret_value(), args.revision)
        log.info("database at revision %s", args.revision, extra={"command": args.command})
        return
    from todo_shared.server import run as serve

    from todo_api.app import create_api_app

    serve(create_api_app)


if __name__ == "__main__":
    run()
