"""FastAPI dependencies giving routes the app's store, password hasher and settings, and
``json_response`` for routes that answer data they already hold in its final form.

They are ``async def`` on purpose: FastAPI runs plain ``def`` dependencies in a thread pool.
Each dependency costs FastAPI ~25 µs per request to solve, so routes take only what they use
(the store wakes the outbox relay itself after a committed change).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import Depends, Request, Response

from todo_api.passwords import Passwords
from todo_api.schemas import dumps
from todo_api.settings import ApiSettings
from todo_api.store import Store


async def get_store(request: Request) -> Store:
    return request.app.state.store


async def get_passwords(request: Request) -> Passwords:
    return request.app.state.passwords


async def get_settings(request: Request) -> ApiSettings:
    return request.app.state.settings


def json_response(content: Any, status_code: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    """``content`` (task dicts, lists, plain values) as ``application/json`` (``schemas.dumps``).

    Routes declare ``response_model`` for OpenAPI and return this: FastAPI then skips its
    validate-and-serialize pass (the data comes from the database or was just validated)."""
    return Response(dumps(content), status_code=status_code, headers=headers, media_type="application/json")


StoreDep = Annotated[Store, Depends(get_store)]
PasswordsDep = Annotated[Passwords, Depends(get_passwords)]
SettingsDep = Annotated[ApiSettings, Depends(get_settings)]
