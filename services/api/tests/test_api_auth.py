"""Accounts through the HTTP API on a real PostgreSQL (rung L1): register, login with cookie
and bearer, logout, me; emails unique case-insensitively; passwords hashed with argon2."""

from __future__ import annotations

import pytest
from api_testlib import PASSWORD, assert_problem, register
from todo_shared.auth import SESSION_COOKIE

pytestmark = pytest.mark.integration

HASH_QUERY = "SELECT password_hash FROM users WHERE email = 'upgrade@example.com'"


async def test_register_answers_201_with_the_user_and_never_the_hash(client, postgres, api_db):
    response = await client.post(
        "/api/v1/auth/register", json={"email": " Ann@Example.com ", "password": PASSWORD}
    )
    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"id", "email", "created_at"}
    assert body["email"] == "Ann@Example.com"
    stored = postgres.psql("SELECT password_hash FROM users", api_db.rsplit("/", 1)[1]).strip()
    assert stored.startswith("$argon2id$")
    assert PASSWORD not in stored


@pytest.mark.parametrize("variant", ["alice@example.com", "ALICE@EXAMPLE.COM", "Alice@Example.Com"])
async def test_duplicate_email_is_409_case_insensitively(client, alice, variant):
    response = await client.post("/api/v1/auth/register", json={"email": variant, "password": PASSWORD})
    body = assert_problem(response, 409)
    assert body["type"] == "urn:todo:problem:email-taken"


async def test_concurrent_registrations_of_one_email_create_one_account(client):
    import asyncio

    responses = await asyncio.gather(
        *(
            client.post("/api/v1/auth/register", json={"email": f"{case}@race.io", "password": PASSWORD})
            for case in ("race", "RACE", "Race", "rAcE")
        )
    )
    assert sorted(r.status_code for r in responses) == [201, 409, 409, 409]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"email": "not-an-email", "password": PASSWORD}, "email"),
        ({"email": "a@b.io", "password": "short"}, "password"),
        ({"email": "a@b.io", "password": "x" * 257}, "password"),
        ({"email": "a@b.io"}, "password"),
        ({"password": PASSWORD}, "email"),
        ({"email": "a@b.io", "password": PASSWORD, "admin": True}, "admin"),
        ({"email": "a\x00@b.io", "password": PASSWORD}, "email"),
        ({"email": "a@b.io", "password": 12345678}, "password"),
    ],
)
async def test_register_validation(client, body, field):
    problem = assert_problem(await client.post("/api/v1/auth/register", json=body), 422)
    assert field in {e["field"] for e in problem["errors"]}


async def test_login_sets_an_httponly_cookie_and_answers_the_token(client, alice):
    response = await client.post(
        "/api/v1/auth/login", json={"email": "ALICE@example.com", "password": PASSWORD}
    )
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"access_token", "token_type"}
    assert body == {"access_token": body["access_token"], "token_type": "bearer"}
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{SESSION_COOKIE}={body['access_token']}")
    assert "HttpOnly" in cookie
    assert "SameSite=lax" in cookie
    assert "Secure" not in cookie  # test environment; Secure outside local/test (tested in shared)


async def test_me_with_cookie_and_with_bearer(client, alice):
    await client.post("/api/v1/auth/login", json={"email": alice.email, "password": PASSWORD})
    by_cookie = await client.get("/api/v1/auth/me")
    assert by_cookie.status_code == 200
    assert by_cookie.json()["email"] == alice.email
    client.cookies.clear()
    by_bearer = await client.get("/api/v1/auth/me", headers=alice.headers)
    assert by_bearer.json()["id"] == alice.id
    assert_problem(await client.get("/api/v1/auth/me"), 401)


async def test_logout_clears_the_cookie(client, alice):
    await client.post("/api/v1/auth/login", json={"email": alice.email, "password": PASSWORD})
    assert (await client.get("/api/v1/auth/me")).status_code == 200
    response = await client.post("/api/v1/auth/logout")
    assert response.status_code == 204
    assert "Max-Age=0" in response.headers["set-cookie"]
    assert SESSION_COOKIE not in client.cookies
    assert_problem(await client.get("/api/v1/auth/me"), 401)
    assert_problem(await client.get("/api/v1/tasks"), 401)


@pytest.mark.parametrize(
    "credentials",
    [
        {"email": "alice@example.com", "password": "wrong password"},
        {"email": "nobody@example.com", "password": PASSWORD},
    ],
    ids=["wrong-password", "unknown-email"],
)
async def test_wrong_credentials_are_401_without_saying_which(client, alice, credentials):
    body = assert_problem(await client.post("/api/v1/auth/login", json=credentials), 401)
    assert body["detail"] == "Wrong email or password."
    assert "set-cookie" not in (await client.post("/api/v1/auth/login", json=credentials)).headers


async def test_a_token_of_a_deleted_account_is_refused(client, alice, postgres, api_db):
    postgres.psql("DELETE FROM users", api_db.rsplit("/", 1)[1])
    assert_problem(await client.get("/api/v1/auth/me", headers=alice.headers), 401)


async def test_hashes_made_with_old_parameters_are_upgraded_at_login(
    client, api_db, postgres, settings_for, run_app
):
    from todo_api.app import create_api_app

    user = await register(client, "upgrade@example.com")
    assert user.email in HASH_QUERY
    db = api_db.rsplit("/", 1)[1]
    old_hash = postgres.psql(HASH_QUERY, db).strip()
    stronger = create_api_app(settings_for(api_db, argon2_time_cost=2))
    async with run_app(stronger) as other:
        response = await other.post("/api/v1/auth/login", json={"email": user.email, "password": PASSWORD})
        assert response.status_code == 200
    new_hash = postgres.psql(HASH_QUERY, db).strip()
    assert new_hash != old_hash
    assert "t=2" in new_hash
