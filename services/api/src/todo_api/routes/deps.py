"""What routes use besides FastAPI's parameters: the app's store, password hasher and settings
(``store_of``, ``passwords_of``, ``settings_of``), and ``json_response`` for routes that answer
data they already hold in its final form.

Routes take the ``Request`` and read these from the app's state rather than declaring a FastAPI
dependency for each: FastAPI solves every dependency on every request, and one costs about 70k
instructions (~17 µs) there, measured on a task create, for what is an attribute lookup.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import Request, Response

from todo_api.passwords import Passwords
from todo_api.schemas import dumps
from todo_api.settings import ApiSettings
from todo_api.store import Store


def store_of(request: Request) -> Store:
    return request.app.state.store


def passwords_of(request: Request) -> Passwords:
    return request.app.state.passwords


def settings_of(request: Request) -> ApiSettings:
    return request.app.state.settings


def json_response(content: Any, status_code: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    """``content`` (task dicts, lists, plain values) as ``application/json`` (``schemas.dumps``).

    Routes declare ``response_model`` for OpenAPI and return this: FastAPI then skips its
    validate-and-serialize pass (the data comes from the database or was just validated)."""
    return Response(dumps(content), status_code=status_code, headers=headers, media_type="application/json")
