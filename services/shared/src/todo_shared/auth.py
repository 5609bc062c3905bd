"""Sessions: signed JWTs (HS256) in an HttpOnly cookie or an ``Authorization: Bearer`` header.

Public API:

- ``SESSION_COOKIE``: the cookie name, ``todo_session``.
- ``issue_token(settings, user_id, email) -> str``: a JWT with ``sub`` (user id),
  ``email``, ``iat``, ``exp`` (``settings.jwt_ttl_seconds``) and ``iss``.
- ``decode_token(settings, token) -> TokenClaims``: verify signature, expiry and issuer;
  raises ``InvalidSessionError``.
- ``TokenClaims``: ``user_id`` (UUID), ``email``, ``issued_at``, ``expires_at``.
- ``current_claims`` / ``current_user_id``: FastAPI dependencies reading the bearer header
  first, then the cookie; they answer a 401 problem (with ``WWW-Authenticate: Bearer``) when
  the token is missing, malformed, expired or signed with another key. Type aliases
  ``UserId`` and ``Claims`` (``Annotated[..., Depends(...)]``) make route signatures short.
- ``set_session_cookie(response, token, settings)`` / ``clear_session_cookie(response, settings)``:
  HttpOnly, SameSite=Lax, Path=/, Secure outside local/test, Max-Age = the token's lifetime.
- ``require_dapr_app_token``: a dependency for routes Dapr calls (subscriptions, bindings):
  when ``APP_API_TOKEN`` is set, the request must carry it in ``dapr-api-token`` (else 401).

The app reads settings from ``request.app.state.settings`` (set by ``create_app``).
"""

from __future__ import annotations

import hmac
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated

import jwt
from fastapi import Depends, Request, Response
from fastapi.security import HTTPBearer

from todo_shared.problems import Problem
from todo_shared.settings import ServiceSettings

SESSION_COOKIE = "todo_session"
ALGORITHM = "HS256"
UNAUTHORIZED_TYPE = "urn:todo:problem:unauthorized"


class InvalidSessionError(Exception):
    """The token is missing, malformed, expired or not ours."""


@dataclass(frozen=True)
class TokenClaims:
    user_id: uuid.UUID
    email: str
    issued_at: datetime
    expires_at: datetime


def issue_token(settings: ServiceSettings, user_id: uuid.UUID | str, email: str) -> str:
    now = datetime.now(UTC)
    claims = {
        "sub": str(user_id),
        "email": email,
        "iat": int(now.timestamp()),
        "exp": int((now + timedelta(seconds=settings.jwt_ttl_seconds)).timestamp()),
        "iss": settings.jwt_issuer,
    }
    return jwt.encode(claims, settings.jwt_signing_key.get_secret_value(), algorithm=ALGORITHM)


# Verified tokens, so a session's every request does not pay for HMAC and JSON parsing again.
# Keyed by key, issuer and token; an entry is only used until the token's own expiry.
_VERIFIED: OrderedDict[tuple[str, str, str], TokenClaims] = OrderedDict()
_VERIFIED_MAX = 10_000


def decode_token(settings: ServiceSettings, token: str) -> TokenClaims:
    cache_key = (settings.jwt_signing_key.get_secret_value(), settings.jwt_issuer, token)
    cached = _VERIFIED.get(cache_key)
    if cached is not None:
        if cached.expires_at > datetime.now(UTC):
            return cached
        _VERIFIED.pop(cache_key, None)
    claims = _verify(settings, token)
    _VERIFIED[cache_key] = claims
    if len(_VERIFIED) > _VERIFIED_MAX:
        _VERIFIED.popitem(last=False)
    return claims


def _verify(settings: ServiceSettings, token: str) -> TokenClaims:
    try:
        claims = jwt.decode(
            token,
            settings.jwt_signing_key.get_secret_value(),
            algorithms=[ALGORITHM],
            issuer=settings.jwt_issuer,
            options={"require": ["sub", "exp", "iat", "iss"]},
        )
        user_id = uuid.UUID(str(claims["sub"]))
    except (jwt.PyJWTError, ValueError, TypeError) as exc:
        raise InvalidSessionError(type(exc).__name__) from None
    return TokenClaims(
        user_id=user_id,
        email=str(claims.get("email", "")),
        issued_at=datetime.fromtimestamp(claims["iat"], UTC),
        expires_at=datetime.fromtimestamp(claims["exp"], UTC),
    )


def _unauthorized(detail: str) -> Problem:
    return Problem(
        401,
        detail,
        type_=UNAUTHORIZED_TYPE,
        headers={"WWW-Authenticate": 'Bearer realm="todo"'},
    )


class _Session(HTTPBearer):
    """The session of a request: the ``Authorization: Bearer`` token, else the session cookie.

    A security scheme (an ``HTTPBearer``), so OpenAPI documents bearer auth, and itself the
    whole dependency: one node for FastAPI to solve per request instead of a function over a
    second, bearer-parsing dependency. Answers our own 401 problem (never HTTPBearer's)."""

    def __init__(self) -> None:
        super().__init__(
            auto_error=False,
            scheme_name="HTTPBearer",
            description="The access_token from login, or the todo_session cookie.",
        )

    @staticmethod
    def claims(request: Request) -> TokenClaims:
        token = None
        authorization = request.headers.get("authorization")
        if authorization:
            scheme, _, credentials = authorization.partition(" ")
            if scheme.lower() == "bearer" and credentials:
                token = credentials
        if token is None:
            token = request.cookies.get(SESSION_COOKIE)
        if not token:
            raise _unauthorized("Sign in first: send the session cookie or an Authorization: Bearer token.")
        try:
            return decode_token(request.app.state.settings, token)
        except InvalidSessionError:
            raise _unauthorized("The session is invalid or has expired; sign in again.") from None


class _CurrentClaims(_Session):
    async def __call__(self, request: Request) -> TokenClaims:  # type: ignore[override]
        return self.claims(request)


class _CurrentUserId(_Session):
    async def __call__(self, request: Request) -> uuid.UUID:  # type: ignore[override]
        return self.claims(request).user_id


current_claims = _CurrentClaims()
current_user_id = _CurrentUserId()

Claims = Annotated[TokenClaims, Depends(current_claims)]
UserId = Annotated[uuid.UUID, Depends(current_user_id)]


def set_session_cookie(response: Response, token: str, settings: ServiceSettings) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=settings.jwt_ttl_seconds,
        path="/",
        httponly=True,
        secure=not settings.is_local,
        samesite="lax",
    )


def clear_session_cookie(response: Response, settings: ServiceSettings) -> None:
    response.delete_cookie(
        SESSION_COOKIE,
        path="/",
        httponly=True,
        secure=not settings.is_local,
        samesite="lax",
    )


async def require_dapr_app_token(request: Request) -> None:
    """For routes the Dapr sidecar calls: check ``dapr-api-token`` against APP_API_TOKEN when set."""
    settings: ServiceSettings = request.app.state.settings
    expected = settings.app_api_token
    if expected is None:
        return
    presented = request.headers.get("dapr-api-token", "")
    if not hmac.compare_digest(presented.encode(), expected.get_secret_value().encode()):
        raise Problem(401, "Missing or wrong dapr-api-token.", type_=UNAUTHORIZED_TYPE)
