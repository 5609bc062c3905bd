"""What the web keeps in the browser: the session, a CSRF token, one-shot flash messages, the time zone.

- ``todo_session``: the api's JWT, set by the web after login with the same attributes the
  api uses (HttpOnly, SameSite=Lax, Path=/, Secure outside local/test), so the gateway and
  the notifier accept the browser directly. The web does not need the signing key: it
  reads the token's ``email`` and ``exp`` only to render the header and skip a round trip
  for an expired session; every data call is verified by the api.
- ``todo_csrf``: double-submit token. Every state-changing form carries it in
  ``csrf_token``; a post whose field does not match the cookie is refused (403).
- ``todo_flash``: messages shown once after a redirect (in the aria-live toast region).
- ``todo_tz``: the browser's IANA zone, written by app.js; UTC until then.
"""

from __future__ import annotations

import hmac
import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, unquote

import jwt
from fastapi import Request, Response
from todo_shared.auth import SESSION_COOKIE
from todo_shared.settings import ServiceSettings

from todo_web.forms import valid_zone_name

CSRF_COOKIE = "todo_csrf"
CSRF_FIELD = "csrf_token"
FLASH_COOKIE = "todo_flash"
TZ_COOKIE = "todo_tz"
CSRF_MAX_AGE = 30 * 24 * 3600


@dataclass(frozen=True)
class Session:
    token: str
    email: str
    expires_at: datetime | None

    @property
    def expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= datetime.now(UTC)


def _claims(token: str) -> dict[str, Any]:
    """The token's claims WITHOUT checking its signature: display only; the api verifies."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False, "verify_exp": False})
    except jwt.PyJWTError:
        return {}
    return claims if isinstance(claims, dict) else {}


def read_session(request: Request) -> Session | None:
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    claims = _claims(token)
    if not claims:
        return None
    exp = claims.get("exp")
    expires = datetime.fromtimestamp(exp, UTC) if isinstance(exp, int | float) else None
    session = Session(token=token, email=str(claims.get("email") or ""), expires_at=expires)
    return None if session.expired else session


def set_session(response: Response, token: str, settings: ServiceSettings) -> None:
    exp = _claims(token).get("exp")
    max_age = settings.jwt_ttl_seconds
    if isinstance(exp, int | float):
        max_age = max(0, int(exp - datetime.now(UTC).timestamp()))
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=max_age,
        path="/",
        httponly=True,
        secure=not settings.is_local,
        samesite="lax",
    )


def clear_session(response: Response, settings: ServiceSettings) -> None:
    response.delete_cookie(
        SESSION_COOKIE, path="/", httponly=True, secure=not settings.is_local, samesite="lax"
    )


# --- CSRF ---------------------------------------------------------------------------------


def csrf_token(request: Request) -> str:
    """This browser's CSRF token (made on first use; `commit_cookies` stores it)."""
    token = getattr(request.state, "csrf_token", None)
    if token:
        return token
    token = request.cookies.get(CSRF_COOKIE) or ""
    if len(token) < 32:
        token = secrets.token_urlsafe(32)
        request.state.csrf_new = True
    request.state.csrf_token = token
    return token


def csrf_ok(request: Request, submitted: object) -> bool:
    cookie = request.cookies.get(CSRF_COOKIE) or ""
    if len(cookie) < 32 or not isinstance(submitted, str):
        return False
    return hmac.compare_digest(cookie.encode(), submitted.encode())


# --- flash --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Flash:
    kind: str
    message: str
    task_id: str | None = None  # the task this page's tab just changed: its live echo is not toasted


def flash(response: Response, message: str, kind: str = "success", task_id: str | None = None) -> None:
    payload = quote(json.dumps([[kind, message, task_id]]), safe="")
    response.set_cookie(FLASH_COOKIE, payload, max_age=60, path="/", httponly=True, samesite="lax")


def read_flashes(request: Request) -> list[Flash]:
    raw = request.cookies.get(FLASH_COOKIE)
    if not raw:
        return []
    try:
        items = json.loads(unquote(raw))
    except ValueError:
        return []
    if not isinstance(items, list):
        return []
    kinds = {"success", "info", "error"}
    found = []
    for item in items[:3]:
        if not isinstance(item, list) or len(item) not in (2, 3):
            continue
        kind, message, task_id = (*item, None)[:3]
        found.append(
            Flash(
                kind=kind if kind in kinds else "info",
                message=str(message)[:300],
                task_id=task_id if isinstance(task_id, str) and len(task_id) <= 64 else None,
            )
        )
    return found


# --- the rest -----------------------------------------------------------------------------


def commit_cookies(request: Request, response: Response, settings: ServiceSettings) -> None:
    """Store a freshly made CSRF token and drop flash messages that were just shown."""
    if getattr(request.state, "csrf_new", False):
        response.set_cookie(
            CSRF_COOKIE,
            request.state.csrf_token,
            max_age=CSRF_MAX_AGE,
            path="/",
            httponly=True,
            secure=not settings.is_local,
            samesite="lax",
        )
        request.state.csrf_new = False
    if getattr(request.state, "flashes_shown", False):
        response.delete_cookie(FLASH_COOKIE, path="/", httponly=True, samesite="lax")


def user_zone(request: Request) -> str:
    return valid_zone_name(unquote(request.cookies.get(TZ_COOKIE) or ""))


def safe_next(value: object, default: str = "/tasks") -> str:
    """A local path to go back to; anything else (other hosts, schemes, odd slashes) is the default."""
    if not isinstance(value, str) or not value.startswith("/") or len(value) > 2000:
        return default
    if value.startswith(("//", "/\\")) or any(ch in value for ch in "\r\n\t\\"):
        return default
    if value.startswith(("/signin", "/signup", "/signout", "/api/", "/static/")):
        return default
    return value
