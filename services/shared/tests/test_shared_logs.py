"""JSON log lines with request ids and without secrets (rung L0)."""

from __future__ import annotations

import io
import json
import logging

import pytest
from pydantic import SecretStr
from todo_shared.logs import REDACTED, JsonFormatter, configure_logging, redact, request_id_var

pytestmark = pytest.mark.unit


def emit(logger_name: str, level: int, message: str, *args, **kwargs) -> dict:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("svc"))
    logger = logging.getLogger(logger_name)
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        logger.log(level, message, *args, **kwargs)
    finally:
        logger.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    return json.loads(lines[0])


def test_a_line_is_one_json_object_with_the_standard_fields():
    token = request_id_var.set("req-1")
    try:
        entry = emit("todo.test", logging.WARNING, "hello %s", "world", extra={"task_id": "t1", "count": 3})
    finally:
        request_id_var.reset(token)
    assert entry["message"] == "hello world"
    assert entry["level"] == "WARNING"
    assert entry["logger"] == "todo.test"
    assert entry["service"] == "svc"
    assert entry["request_id"] == "req-1"
    assert entry["task_id"] == "t1"
    assert entry["count"] == 3
    assert entry["time"].endswith("+00:00")


def test_secrets_never_reach_the_log():
    entry = emit(
        "todo.test",
        logging.INFO,
        "login",
        extra={
            "password": "hunter22",
            "authorization": "Bearer abc.def.ghi",
            "headers": {"Cookie": "todo_session=abc", "X-Ok": "fine"},
            "jwt_signing_key": "k" * 40,
            "settings_key": SecretStr("s3cr3t"),
            "database_url": "postgresql://u:pw@h/db",
            "nested": [{"api_token": "t0k"}],
        },
    )
    text = json.dumps(entry)
    for secret in ("hunter22", "abc.def.ghi", "todo_session=abc", "k" * 40, "s3cr3t", "u:pw@", "t0k"):
        assert secret not in text
    assert entry["password"] == REDACTED
    assert entry["headers"]["Cookie"] == REDACTED
    assert entry["headers"]["X-Ok"] == "fine"


def test_exceptions_are_logged_with_their_traceback():
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        entry = emit("todo.test", logging.ERROR, "failed", exc_info=True)
    assert "RuntimeError: boom" in entry["exc"]


def test_redact_handles_odd_values():
    assert redact({"a": (1, 2), "b": {1, 2}, "c": object}) == {"a": [1, 2], "b": [1, 2], "c": str(object)}


@pytest.fixture
def restore_logging():
    """configure_logging changes the process: its root handlers and level, and the logging
    module's switches for what each record collects. Put them back for the other tests."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    switches = ("logThreads", "logProcesses", "logMultiprocessing", "_srcfile")
    saved_switches = {name: getattr(logging, name) for name in switches}
    yield
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    for name, value in saved_switches.items():
        setattr(logging, name, value)


def test_configure_logging_routes_everything_to_one_json_handler(capsys, restore_logging):
    configure_logging("INFO", "svc")
    logging.getLogger("uvicorn.error").info("from uvicorn")
    logging.getLogger("todo.x").info("from us")
    logging.getLogger("todo.x").debug("hidden")
    out = capsys.readouterr().out.splitlines()
    messages = [json.loads(line)["message"] for line in out]
    assert messages == ["from uvicorn", "from us"]


def test_time_is_exact_across_seconds_and_extras_across_call_sites():
    """Records alternating between seconds and between call sites (different extra keys) each
    come out with their own time and only their own extras, the sensitive ones redacted."""
    formatter = JsonFormatter("svc")
    lines = []
    for created, extra in [
        (1_800_000_000.25, {"a": 1}),
        (1_800_000_001.5, {"b": "x", "password": "hunter22"}),
        (1_800_000_000.75, {"a": 2}),
    ]:
        record = logging.LogRecord("todo.test", logging.INFO, __file__, 1, "m", None, None)
        record.created = created
        record.__dict__.update(extra)
        lines.append(json.loads(formatter.format(record)))
    assert [line["time"] for line in lines] == [
        "2027-01-15T08:00:00.250+00:00",
        "2027-01-15T08:00:01.500+00:00",
        "2027-01-15T08:00:00.750+00:00",
    ]
    assert (lines[0]["a"], lines[2]["a"]) == (1, 2)
    assert (lines[1]["b"], lines[1]["password"]) == ("x", REDACTED)
    assert "b" not in lines[0] and "a" not in lines[1]
