"""What every Todo service needs. Each module's docstring documents its public API.

- ``todo_shared.settings``: ``ServiceSettings`` (pydantic-settings base: ``TODO_*`` plus
  Dapr's ``DAPR_HTTP_PORT``/``DAPR_API_TOKEN``/``APP_API_TOKEN``; weak JWT keys refused
  outside local/test), ``load_settings``, ``SettingsError``, ``Environment``.
- ``todo_shared.logs``: ``configure_logging`` (JSON lines on stdout), ``request_id_var``,
  ``redact``.
- ``todo_shared.app``: ``create_app`` (middleware: request id, body limit, metrics by route
  template, access log, 500 problem; ``/healthz``, ``/readyz``, ``/metrics``),
  ``add_readiness_check``, ``mark_shutting_down``, ``is_shutting_down``.
- ``todo_shared.problems``: ``Problem`` (raise it), ``validation_problem``, ``problem_response``,
  ``ProblemDetails``, ``PROBLEM_JSON``.
- ``todo_shared.auth``: ``issue_token``, ``decode_token``, ``TokenClaims``,
  ``current_user_id``/``UserId``, ``current_claims``/``Claims``, ``set_session_cookie``,
  ``clear_session_cookie``, ``SESSION_COOKIE``, ``require_dapr_app_token``.
- ``todo_shared.dapr``: ``DaprClient`` (publish, invoke, readiness), ``DaprError``,
  ``cloud_event``.
- ``todo_shared.metrics``: ``HttpMetrics``, ``new_registry``.
- ``todo_shared.server``: ``run(app_factory)`` (uvicorn with graceful shutdown),
  ``GracefulServer``, ``uvicorn_config``.
- ``todo_shared.testing``: ``ServerThread`` (real uvicorn in a thread) and
  ``DaprSidecarStandIn`` (a stand-in for the Dapr sidecar's HTTP API, for tests).

The most used names are re-exported here (imported on first use).
"""

import importlib
from typing import Any

# Re-exported lazily, so `import todo_shared.settings` (a migration command, say) does not
# pay for importing FastAPI.
_EXPORTS = {
    "todo_shared.app": ("add_readiness_check", "create_app", "is_shutting_down", "mark_shutting_down"),
    "todo_shared.auth": (
        "SESSION_COOKIE",
        "Claims",
        "TokenClaims",
        "UserId",
        "clear_session_cookie",
        "current_user_id",
        "decode_token",
        "issue_token",
        "require_dapr_app_token",
        "set_session_cookie",
    ),
    "todo_shared.dapr": ("DaprClient", "DaprError", "cloud_event"),
    "todo_shared.logs": ("configure_logging", "request_id_var"),
    "todo_shared.problems": ("PROBLEM_JSON", "Problem", "problem_response", "validation_problem"),
    "todo_shared.server": ("run",),
    "todo_shared.settings": ("Environment", "ServiceSettings", "SettingsError", "load_settings"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'todo_shared' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_MODULE_OF])


__all__ = [
    "PROBLEM_JSON",
    "SESSION_COOKIE",
    "Claims",
    "DaprClient",
    "DaprError",
    "Environment",
    "Problem",
    "ServiceSettings",
    "SettingsError",
    "TokenClaims",
    "UserId",
    "add_readiness_check",
    "clear_session_cookie",
    "cloud_event",
    "configure_logging",
    "create_app",
    "current_user_id",
    "decode_token",
    "is_shutting_down",
    "issue_token",
    "load_settings",
    "mark_shutting_down",
    "problem_response",
    "request_id_var",
    "require_dapr_app_token",
    "run",
    "set_session_cookie",
    "validation_problem",
]
