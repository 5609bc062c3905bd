"""JSON logs to stdout: one object per line, with the request id, never a secret.

Public API:

- ``configure_logging(level, service)``: route the root, uvicorn and library loggers to
  one JSON handler on stdout (idempotent; call it once at start-up).
- ``JsonFormatter``: the formatter (``time``, ``level``, ``logger``, ``message``,
  ``service``, ``request_id``, then any ``extra=`` fields and ``exc`` for exceptions).
- ``request_id_var``: the ContextVar holding the current request id (set by the
  request-id middleware; readable anywhere, e.g. to forward it to another service).
- ``redact(value)``: what the formatter does to ``extra`` fields: values under a sensitive
  key (password, token, secret, authorization, cookie, api key, dsn...) become
  ``[REDACTED]``, a ``SecretStr`` stays masked, nested dicts and lists are walked.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
import time
from contextvars import ContextVar
from datetime import datetime
from typing import Any

import orjson
from pydantic import SecretBytes, SecretStr

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)

REDACTED = "[REDACTED]"
SENSITIVE_KEY_PARTS = (
    "password",
    "passwd",
    "secret",
    "token",
    "authorization",
    "cookie",
    "api_key",
    "apikey",
    "api-key",
    "signing_key",
    "private_key",
    "dsn",
    "database_url",
    "credential",
)

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_RECORD_ATTRS = frozenset(
    vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None)).keys()
    | {"message", "asctime", "color_message", "taskName"}
)


@functools.lru_cache(maxsize=4096)
def is_sensitive_key(key: str) -> bool:
    lowered = key.lower()
    return any(part in lowered for part in SENSITIVE_KEY_PARTS)


def redact(value: Any, key: str | None = None, _depth: int = 0) -> Any:
    """A JSON-friendly copy of ``value`` with secrets removed."""
    if key is not None and is_sensitive_key(key):
        return REDACTED
    if isinstance(value, SecretStr | SecretBytes):
        return str(value)  # pydantic masks it: '**********'
    if _depth > 6:
        return repr(value)[:200]
    if isinstance(value, dict):
        return {str(k): redact(v, str(k), _depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [redact(v, None, _depth + 1) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


_PLAIN = frozenset({str, int, float, bool})


class JsonFormatter(logging.Formatter):
    """One JSON object per record, written with orjson (a log line per request is a hot path).

    Plain ``extra`` values under a key that is not sensitive are taken as they are; anything
    else goes through ``redact``. The time is UTC with milliseconds, as ``isoformat`` writes it.
    """

    def __init__(self, service: str = "") -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        seconds = int(record.created)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
        millis = int((record.created - seconds) * 1000)
        entry: dict[str, Any] = {
            "time": f"{stamp}.{millis:03d}+00:00",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "service": self.service,
            "request_id": request_id_var.get(),
        }
        for key, value in record.__dict__.items():
            if key in _RECORD_ATTRS or key in entry or key.startswith("_"):
                continue
            if type(value) in _PLAIN and not is_sensitive_key(key):
                entry[key] = value
            else:
                entry[key] = redact(value, key)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc"] = record.exc_text
        try:
            return orjson.dumps(entry, default=str).decode()
        except (TypeError, orjson.JSONEncodeError):  # e.g. an integer beyond 64 bits
            return json.dumps(entry, default=str, ensure_ascii=False)


_LIBRARY_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "fastapi", "sqlalchemy", "alembic", "httpx")


def configure_logging(level: str = "INFO", service: str = "") -> None:
    """One JSON handler on stdout for everything; uvicorn's access log stays off (we log requests)."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
    # Lines carry none of the thread, process or source-location fields: do not collect them
    # for every record (the logging HOWTO's "Optimization" switches; without _srcfile, a record
    # no longer walks the stack for the caller's file and line: ~6 µs per access line).
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    logging._srcfile = None
    for name in _LIBRARY_LOGGERS:
        lib = logging.getLogger(name)
        lib.handlers.clear()
        lib.propagate = True
    logging.getLogger("uvicorn.access").disabled = True
    # httpx logs every request line at INFO with full URLs; keep it at WARNING.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
