"""Accounts: register, login (token + session cookie), logout, me."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response, status
from todo_shared.auth import UserId, clear_session_cookie, issue_token, set_session_cookie
from todo_shared.problems import Problem

from todo_api.routes.deps import json_response, passwords_of, settings_of, store_of
from todo_api.schemas import Credentials, TokenOut, UserOut

router = APIRouter(prefix="/api/v1/auth", tags=["auth"])


@router.post("/register", status_code=status.HTTP_201_CREATED, response_model=UserOut)
async def register(body: Credentials, request: Request) -> UserOut:
    """Create an account. Emails are unique case-insensitively (409 when taken)."""
    password_hash = await passwords_of(request).hash(body.password)
    row = await store_of(request).create_user(body.email, password_hash)
    if row is None:
        raise Problem(409, "An account with this email already exists.", type_="urn:todo:problem:email-taken")
    return UserOut.model_validate(dict(row._mapping))


@router.post("/login", response_model=TokenOut)
async def login(body: Credentials, request: Request, response: Response) -> TokenOut:
    """Check the password; answer the token and set the session cookie."""
    store, passwords, settings = store_of(request), passwords_of(request), settings_of(request)
    user = await store.user_by_email(body.email)
    if not await passwords.verify(user["password_hash"] if user else None, body.password):
        raise Problem(
            401,
            "Wrong email or password.",
            type_="urn:todo:problem:bad-credentials",
            headers={"WWW-Authenticate": 'Bearer realm="todo"'},
        )
    if passwords.needs_rehash(user["password_hash"]):
        await store.update_password_hash(user["id"], await passwords.hash(body.password))
    token = issue_token(settings, user["id"], user["email"])
    set_session_cookie(response, token, settings)
    return TokenOut(access_token=token)


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT)
async def logout(request: Request) -> Response:
    """Clear the session cookie (tokens are stateless: they lapse at their expiry)."""
    response = Response(status_code=status.HTTP_204_NO_CONTENT)
    clear_session_cookie(response, settings_of(request))
    return response


@router.get("/me", response_model=UserOut)
async def me(user_id: UserId, request: Request) -> Response:
    row = await store_of(request).user_by_id(user_id)
    if row is None:
        raise Problem(401, "This account no longer exists.", type_="urn:todo:problem:unauthorized")
    return json_response({"id": row["id"], "email": row["email"], "created_at": row["created_at"]})
