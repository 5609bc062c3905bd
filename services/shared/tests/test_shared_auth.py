"""JWT sessions: tokens, the user dependency (cookie or bearer), cookie flags, Dapr app token (rung L0)."""

from __future__ import annotations

import secrets
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import jwt
import pytest
from fastapi import APIRouter, Depends, Response
from todo_shared.app import create_app
from todo_shared.auth import (
    SESSION_COOKIE,
    InvalidSessionError,
    UserId,
    clear_session_cookie,
    decode_token,
    issue_token,
    require_dapr_app_token,
    set_session_cookie,
)
from todo_shared.problems import PROBLEM_JSON
from todo_shared.settings import ServiceSettings

pytestmark = pytest.mark.unit

KEY = secrets.token_urlsafe(32)
APP_TOKEN = secrets.token_urlsafe(24)
USER = uuid.UUID("2f7e7a0e-9d1c-4c3b-8f52-1c0b6f0e9a11")


def settings(**overrides) -> ServiceSettings:
    return ServiceSettings(**{"environment": "test", "jwt_signing_key": KEY, **overrides})


def test_token_round_trip_carries_the_claims():
    s = settings()
    claims = decode_token(s, issue_token(s, USER, "a@example.com"))
    assert claims.user_id == USER
    assert claims.email == "a@example.com"
    assert claims.expires_at - claims.issued_at == timedelta(seconds=s.jwt_ttl_seconds)
    raw = jwt.decode(issue_token(s, USER, "a@example.com"), KEY, algorithms=["HS256"], issuer="todo")
    assert {"sub", "email", "iat", "exp", "iss"} <= raw.keys()


@pytest.mark.parametrize(
    "token",
    [
        "not-a-jwt",
        jwt.encode({"sub": str(USER), "iat": 0, "exp": 1, "iss": "todo"}, KEY, algorithm="HS256"),  # expired
        jwt.encode(
            {"sub": str(USER), "iat": 0, "exp": 9_999_999_999, "iss": "todo"}, "x" * 40, algorithm="HS256"
        ),
        jwt.encode({"sub": str(USER), "iat": 0, "exp": 9_999_999_999, "iss": "todo"}, None, algorithm="none"),
        jwt.encode(
            {"sub": str(USER), "iat": 0, "exp": 9_999_999_999, "iss": "other"}, KEY, algorithm="HS256"
        ),
        jwt.encode(
            {"sub": "not-a-uuid", "iat": 0, "exp": 9_999_999_999, "iss": "todo"}, KEY, algorithm="HS256"
        ),
        jwt.encode({"iat": 0, "exp": 9_999_999_999, "iss": "todo"}, KEY, algorithm="HS256"),  # no sub
    ],
    ids=["garbage", "expired", "other-key", "alg-none", "other-issuer", "bad-sub", "no-sub"],
)
def test_bad_tokens_are_refused(token):
    with pytest.raises(InvalidSessionError):
        decode_token(settings(), token)


def make_app(s: ServiceSettings):
    router = APIRouter()

    @router.get("/whoami")
    async def whoami(user_id: UserId) -> dict:
        return {"user_id": str(user_id)}

    @router.post("/session")
    async def session(response: Response) -> dict:
        set_session_cookie(response, issue_token(s, USER, "a@example.com"), s)
        return {}

    @router.delete("/session", status_code=204)
    async def end_session() -> Response:
        response = Response(status_code=204)
        clear_session_cookie(response, s)
        return response

    @router.post("/dapr/subscriber", dependencies=[Depends(require_dapr_app_token)])
    async def subscriber() -> dict:
        return {"status": "SUCCESS"}

    return create_app(s, routers=[router])


async def call(app, method: str, path: str, **kwargs) -> httpx.Response:
    cookies = kwargs.pop("cookies", None)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://svc", cookies=cookies) as client:
        return await client.request(method, path, **kwargs)


async def test_bearer_and_cookie_both_authenticate():
    s = settings()
    app = make_app(s)
    token = issue_token(s, USER, "a@example.com")
    by_header = await call(app, "GET", "/whoami", headers={"Authorization": f"Bearer {token}"})
    assert by_header.json() == {"user_id": str(USER)}
    by_cookie = await call(app, "GET", "/whoami", cookies={SESSION_COOKIE: token})
    assert by_cookie.json() == {"user_id": str(USER)}


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"headers": {"Authorization": "Bearer nope"}},
        {"headers": {"Authorization": "Basic dXNlcjpwYXNz"}},
        {"cookies": {SESSION_COOKIE: "nope"}},
    ],
    ids=["none", "bad-bearer", "basic", "bad-cookie"],
)
async def test_missing_or_bad_credentials_are_a_401_problem(kwargs):
    response = await call(make_app(settings()), "GET", "/whoami", **kwargs)
    assert response.status_code == 401
    assert response.headers["content-type"] == PROBLEM_JSON
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.json()["type"] == "urn:todo:problem:unauthorized"


@pytest.mark.parametrize(("environment", "secure"), [("local", False), ("test", False), ("production", True)])
async def test_session_cookie_flags(environment, secure):
    s = settings(environment=environment)
    response = await call(make_app(s), "POST", "/session")
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{SESSION_COOKIE}=")
    assert "HttpOnly" in cookie
    assert "SameSite=lax" in cookie
    assert "Path=/" in cookie
    assert ("Secure" in cookie) is secure
    assert f"Max-Age={s.jwt_ttl_seconds}" in cookie


async def test_clearing_the_cookie_expires_it():
    response = await call(make_app(settings()), "DELETE", "/session")
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f'{SESSION_COOKIE}="";') or cookie.startswith(f"{SESSION_COOKIE}=;")
    assert "Max-Age=0" in cookie
    assert "HttpOnly" in cookie


async def test_dapr_called_routes_check_the_app_token_when_set():
    open_app = make_app(settings())
    assert (await call(open_app, "POST", "/dapr/subscriber")).status_code == 200

    guarded = make_app(settings(app_api_token=APP_TOKEN))
    assert (await call(guarded, "POST", "/dapr/subscriber")).status_code == 401
    wrong = await call(guarded, "POST", "/dapr/subscriber", headers={"dapr-api-token": "wrong"})
    assert wrong.status_code == 401
    right = await call(guarded, "POST", "/dapr/subscriber", headers={"dapr-api-token": APP_TOKEN})
    assert right.status_code == 200


def test_expiry_follows_the_settings():
    s = settings(jwt_ttl_seconds=120)
    claims = decode_token(s, issue_token(s, USER, "a@example.com"))
    assert claims.expires_at <= datetime.now(UTC) + timedelta(seconds=121)
