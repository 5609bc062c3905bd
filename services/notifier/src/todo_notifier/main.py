"""The notifier service: the app factory and the ``todo-notifier`` command.

    todo-notifier                 serve (uvicorn, graceful shutdown on SIGTERM)
    todo-notifier serve
    todo-notifier migrate         upgrade the database to the newest revision, then exit
    todo-notifier migrate --revision <rev> | todo-notifier downgrade --revision <rev>

Module layout:

- ``app``: ``create_notifier_app`` (lifespan: engine, Dapr clients, outbox relay, readiness).
- ``settings``: ``NotifierSettings`` (env ``TODO_*`` plus Dapr's variables).
- ``tables``: the schema (SQLAlchemy Core); ``migrations/``: Alembic; ``migrate``: run them.
- ``db``: async engine (asyncpg) and readiness check.
- ``events``: parsing and validating task events (pure).
- ``reminders``: the per-task record, ordering, job plans, the fire check (pure).
- ``sidecar``: Dapr state and Jobs API calls.
- ``consumer``: ``Reminders``: task events -> records and jobs; fired jobs -> notifications.
- ``store``: notifications and the reminder.due outbox (one transaction per delivery).
- ``routes``: the notification API and the routes Dapr calls.
- ``metrics``: the notifier's Prometheus counters.
"""

from __future__ import annotations

import argparse
import logging
import sys

from todo_shared.logs import configure_logging
from todo_shared.settings import SettingsError, load_settings

from todo_notifier.settings import NotifierSettings

log = logging.getLogger("todo.notifier")


def run(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="todo-notifier", description="The Todo notifier service.")
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("serve", help="serve HTTP (the default)")
    up = commands.add_parser("migrate", help="upgrade the database schema, then exit")
    up.add_argument("--revision", default="head")
    down = commands.add_parser("downgrade", help="downgrade the database schema, then exit")
    down.add_argument("--revision", required=True)
    args = parser.parse_args(argv)

    if args.command in ("migrate", "downgrade"):
        configure_logging("INFO", "notifier")
        try:
            settings = load_settings(NotifierSettings)
        except SettingsError as exc:
            log.error("%s", exc)
            sys.exit(2)
        configure_logging(settings.log_level, settings.service_name)
        from todo_notifier import migrate

        action = migrate.upgrade if args.command == "migrate" else migrate.downgrade
        action(settings.database_url.get_secret_value(), args.revision)
        log.info("database at revision %s", args.revision, extra={"command": args.command})
        return
    from todo_shared.server import run as serve

    from todo_notifier.app import create_notifier_app

    serve(create_notifier_app)


if __name__ == "__main__":
    run()
