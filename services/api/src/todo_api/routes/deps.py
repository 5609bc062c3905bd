"""FastAPI dependencies giving routes the app's store, password hasher and outbox relay.

They are ``async def`` on purpose: FastAPI runs plain ``def`` dependencies in a thread pool.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request

from todo_api.passwords import Passwords
from todo_api.settings import ApiSettings
from todo_api.store import Store


async def get_store(request: Request) -> Store:
    return request.app.state.store


async def get_passwords(request: Request) -> Passwords:
    return request.app.state.passwords


async def get_settings(request: Request) -> ApiSettings:
    return request.app.state.settings


def _nothing() -> None:
    return None


async def get_notifier(request: Request) -> Callable[[], None]:
    """Wakes the outbox relay after a committed change (events go out without waiting for a poll)."""
    relay = request.app.state.relay
    return relay.notify if relay is not None else _nothing


StoreDep = Annotated[Store, Depends(get_store)]
PasswordsDep = Annotated[Passwords, Depends(get_passwords)]
SettingsDep = Annotated[ApiSettings, Depends(get_settings)]
NotifyDep = Annotated[Callable[[], None], Depends(get_notifier)]
