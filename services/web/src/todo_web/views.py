"""The pages: accounts, the task list (and its partial for live refresh), task forms and actions.

Every state-changing route is a form POST with the double-submit CSRF token. Routes that
the page's JavaScript calls in place (complete, reopen, delete) answer JSON when asked
with ``Accept: application/json`` and redirect (303, with a flash message) otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from dataclasses import replace
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException as StarletteHTTPException

from todo_web.apiclient import ApiClient, ApiError, ApiUnavailable
from todo_web.forms import PRIORITIES, RECURRENCES, REMINDER_PRESETS, AccountForm, TaskForm
from todo_web.pages import Filters, list_context, render, templates
from todo_web.session import (
    CSRF_FIELD,
    Session,
    clear_session,
    commit_cookies,
    csrf_ok,
    csrf_token,
    flash,
    read_session,
    safe_next,
    set_session,
    user_zone,
)
from todo_web.settings import WebSettings

router = APIRouter()

TASK_LABELS = {
    "title": "Title",
    "description": "Description",
    "priority": "Priority",
    "tags": "Tags",
    "due_at": "Due",
    "remind_before_minutes": "Reminder",
    "recurrence": "Repeats",
}
UNAVAILABLE = "The service did not answer. Nothing was changed; please try again in a moment."
PRIORITY_CHOICES = tuple((p, p.capitalize()) for p in PRIORITIES)
RECURRENCE_CHOICES = (
    ("none", "Does not repeat"),
    ("daily", "Daily"),
    ("weekly", "Weekly"),
    ("monthly", "Monthly"),
)
assert tuple(r for r, _ in RECURRENCE_CHOICES) == RECURRENCES


class SignInRequired(Exception):
    """No usable session: go to the sign-in page (or answer 401 to scripts)."""

    def __init__(self, expired: bool = False) -> None:
        super().__init__("sign in required")
        self.expired = expired


class CsrfRejected(Exception):
    """A state-changing form without the right CSRF token."""


def task_path_id(task_id: str) -> str:
    """Task ids are UUIDs; anything else is a page that does not exist (never sent to the api)."""
    try:
        return str(uuid.UUID(task_id))
    except ValueError:
        raise StarletteHTTPException(404) from None


def api_of(request: Request) -> ApiClient:
    return request.app.state.api


def settings_of(request: Request) -> WebSettings:
    return request.app.state.settings


def wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "")


def require_session(request: Request) -> Session:
    session = read_session(request)
    if session is None:
        raise SignInRequired(expired=bool(request.cookies.get("todo_session")))
    return session


async def checked_form(request: Request) -> FormData:
    form = await request.form()
    if not csrf_ok(request, form.get(CSRF_FIELD)):
        raise CsrfRejected()
    return form


def redirect(
    request: Request, url: str, message: str | None = None, kind: str = "success", task_id: str | None = None
) -> Response:
    response = RedirectResponse(url, status_code=303)
    if message:
        flash(response, message, kind, task_id)
    commit_cookies(request, response, settings_of(request))
    return response


def unauthorized_as_signin(exc: ApiError) -> None:
    if exc.status == 401:
        raise SignInRequired(expired=True) from exc


# --- accounts -----------------------------------------------------------------------------


@router.get("/", include_in_schema=False)
async def home(request: Request) -> Response:
    return RedirectResponse("/tasks" if read_session(request) else "/signin", status_code=303)


@router.get("/signin", response_class=HTMLResponse)
async def signin_page(request: Request) -> Response:
    next_url = safe_next(request.query_params.get("next"))
    if read_session(request):
        return RedirectResponse(next_url, status_code=303)
    return render(request, "signin.html", form=AccountForm(), error=None, next=next_url)


@router.post("/signin", response_class=HTMLResponse)
async def signin(request: Request) -> Response:
    data = await checked_form(request)
    email = str(data.get("email") or "").strip()
    password = str(data.get("password") or "")
    next_url = safe_next(data.get("next"))
    form = AccountForm(email=email)
    asks = {"email": (email, "Enter your email address."), "password": (password, "Enter your password.")}
    form.errors = {name: ask for name, (value, ask) in asks.items() if not value}
    if form.errors:
        return render(request, "signin.html", 422, form=form, error=None, next=next_url)
    try:
        token = await api_of(request).login(email, password)
    except ApiError as exc:
        error = "Email or password is incorrect." if exc.status in (400, 401, 403, 404) else exc.detail
        if exc.status == 422:
            form.errors = exc.fields
        return render(request, "signin.html", exc.status, form=form, error=error, next=next_url)
    except ApiUnavailable:
        return render(request, "signin.html", 503, form=form, error=UNAVAILABLE, next=next_url)
    response = redirect(request, next_url)
    set_session(response, token, settings_of(request))
    return response


@router.get("/signup", response_class=HTMLResponse)
async def signup_page(request: Request) -> Response:
    next_url = safe_next(request.query_params.get("next"))
    if read_session(request):
        return RedirectResponse(next_url, status_code=303)
    return render(request, "signup.html", form=AccountForm(), error=None, next=next_url)


@router.post("/signup", response_class=HTMLResponse)
async def signup(request: Request) -> Response:
    data = await checked_form(request)
    email = str(data.get("email") or "").strip()
    password = str(data.get("password") or "")
    next_url = safe_next(data.get("next"))
    form = AccountForm(email=email)
    api = api_of(request)
    try:
        await api.register(email, password)
        token = await api.login(email, password)
    except ApiError as exc:
        form.errors = {k: v for k, v in exc.fields.items() if k in ("email", "password")}
        if exc.status == 409:
            form.errors["email"] = "An account with this email already exists. Sign in instead?"
        error = "Please correct the highlighted fields." if form.errors else exc.detail
        return render(request, "signup.html", exc.status, form=form, error=error, next=next_url)
    except ApiUnavailable:
        return render(request, "signup.html", 503, form=form, error=UNAVAILABLE, next=next_url)
    response = redirect(request, next_url, "Welcome! Your account is ready.")
    set_session(response, token, settings_of(request))
    return response


@router.post("/signout")
async def signout(request: Request) -> Response:
    await checked_form(request)
    session = read_session(request)
    if session:
        # Signing out here must work even when the api does not answer.
        with contextlib.suppress(ApiError, ApiUnavailable):
            await api_of(request).logout(session.token)
    response = redirect(request, "/signin", "You are signed out.", "info")
    clear_session(response, settings_of(request))
    return response


# --- the task list ------------------------------------------------------------------------


async def _list(request: Request, filters: Filters | None = None) -> dict[str, Any]:
    session = require_session(request)
    settings = settings_of(request)
    filters = filters or Filters.from_query(request.query_params)
    tz = user_zone(request)
    api = api_of(request)
    try:
        body, tags = await asyncio.gather(
            api.list_tasks(session.token, filters.api_params(settings.page_size, tz)),
            api.tags(session.token),
        )
    except ApiError as exc:
        unauthorized_as_signin(exc)
        raise
    return list_context(filters, body, tags, tz, settings.page_size)


@router.get("/tasks", response_class=HTMLResponse)
async def tasks_page(request: Request) -> Response:
    context = await _list(request)
    if context["pages"] < context["page"] and context["total"]:
        return RedirectResponse(context["filters"].url(page=context["pages"]), status_code=303)
    return render(request, "tasks.html", **context)


@router.get("/tasks/partial", response_class=HTMLResponse)
async def tasks_partial(request: Request) -> Response:
    """The list alone (no layout), for app.js to swap in after a change or a live event."""
    context = await _list(request)
    if context["pages"] < context["page"] and context["total"]:
        # The last item of the last page went away: show the page that is now last.
        context = await _list(request, replace(context["filters"], page=context["pages"]))
    context.update(csrf_token=csrf_token(request), tz=user_zone(request))
    response = templates.TemplateResponse(request, "_task_list.html", context)
    commit_cookies(request, response, settings_of(request))
    return response


# --- task forms ---------------------------------------------------------------------------


def _form_page(
    request: Request,
    form: TaskForm,
    *,
    task: dict[str, Any] | None,
    action: str,
    next_url: str,
    error: str | None = None,
    status_code: int = 200,
    reload_on_tz: bool = False,
) -> Response:
    return render(
        request,
        "task_form.html",
        status_code,
        form=form,
        task=task,
        action=action,
        next=next_url,
        error=error,
        labels=TASK_LABELS,
        priorities=PRIORITY_CHOICES,
        recurrences=RECURRENCE_CHOICES,
        reminder_presets=REMINDER_PRESETS,
        reload_on_tz=reload_on_tz,
    )


def _refused(form: TaskForm, exc: ApiError) -> str:
    """Put the api's field errors on the form; the message for the summary."""
    unauthorized_as_signin(exc)
    form.errors = exc.fields
    if form.errors:
        return "Please correct the highlighted fields."
    return exc.detail


@router.get("/tasks/new", response_class=HTMLResponse)
async def new_task_page(request: Request) -> Response:
    require_session(request)
    next_url = safe_next(request.query_params.get("next"))
    form = TaskForm(tz=user_zone(request))
    return _form_page(request, form, task=None, action="/tasks/new", next_url=next_url)


@router.post("/tasks/new", response_class=HTMLResponse)
async def create_task(request: Request) -> Response:
    session = require_session(request)
    data = await checked_form(request)
    next_url = safe_next(data.get("next"))
    form = TaskForm.from_form(data, user_zone(request))
    payload = form.payload()
    if payload is None:
        return _form_page(
            request, form, task=None, action="/tasks/new", next_url=next_url, error=None, status_code=422
        )
    try:
        task = await api_of(request).create_task(session.token, payload)
    except ApiError as exc:
        error = _refused(form, exc)
        return _form_page(
            request,
            form,
            task=None,
            action="/tasks/new",
            next_url=next_url,
            error=error,
            status_code=exc.status,
        )
    except ApiUnavailable:
        return _form_page(
            request,
            form,
            task=None,
            action="/tasks/new",
            next_url=next_url,
            error=UNAVAILABLE,
            status_code=503,
        )
    title = task.get("title", form.title.strip())
    return redirect(request, next_url, f"Created “{title}”.", task_id=str(task.get("id") or "") or None)


async def _get_task(request: Request, session: Session, task_id: str) -> dict[str, Any]:
    try:
        return await api_of(request).get_task(session.token, task_id)
    except ApiError as exc:
        unauthorized_as_signin(exc)
        raise


@router.get("/tasks/{task_id}/edit", response_class=HTMLResponse)
async def edit_task_page(request: Request, task_id: str) -> Response:
    task_id = task_path_id(task_id)
    session = require_session(request)
    next_url = safe_next(request.query_params.get("next"))
    task = await _get_task(request, session, task_id)
    tz = user_zone(request)
    form = TaskForm.from_task(task, tz)
    return _form_page(
        request,
        form,
        task=task,
        action=f"/tasks/{task['id']}/edit",
        next_url=next_url,
        reload_on_tz=bool(form.due_at),
    )


@router.post("/tasks/{task_id}/edit", response_class=HTMLResponse)
async def edit_task(request: Request, task_id: str) -> Response:
    task_id = task_path_id(task_id)
    session = require_session(request)
    data = await checked_form(request)
    next_url = safe_next(data.get("next"))
    form = TaskForm.from_form(data, user_zone(request))
    action = f"/tasks/{task_id}/edit"
    task_stub = {"id": task_id, "title": form.title}
    payload = form.payload()
    if payload is None:
        return _form_page(request, form, task=task_stub, action=action, next_url=next_url, status_code=422)
    try:
        task = await api_of(request).update_task(session.token, task_id, payload)
    except ApiError as exc:
        if exc.status == 404:
            raise
        error = _refused(form, exc)
        return _form_page(
            request,
            form,
            task=task_stub,
            action=action,
            next_url=next_url,
            error=error,
            status_code=exc.status,
        )
    except ApiUnavailable:
        return _form_page(
            request,
            form,
            task=task_stub,
            action=action,
            next_url=next_url,
            error=UNAVAILABLE,
            status_code=503,
        )
    return redirect(request, next_url, f"Saved “{task.get('title', form.title.strip())}”.", task_id=task_id)


# --- task actions -------------------------------------------------------------------------


def _action_result(
    request: Request, next_url: str, *, ok: bool, message: str, task_id: str, focus: bool, status: int = 200
) -> Response:
    if wants_json(request):
        body = {"ok": ok, "message": message, "task_id": task_id, "focus_task_id": task_id if focus else None}
        response: Response = JSONResponse(body, status_code=status)
        commit_cookies(request, response, settings_of(request))
        return response
    return redirect(request, next_url, message, "success" if ok else "error", task_id)


async def _toggle(request: Request, task_id: str, action: str) -> Response:
    task_id = task_path_id(task_id)
    session = require_session(request)
    data = await checked_form(request)
    next_url = safe_next(data.get("next"))
    api = api_of(request)
    call = api.complete_task if action == "complete" else api.reopen_task
    try:
        task = await call(session.token, task_id)
    except ApiError as exc:
        unauthorized_as_signin(exc)
        message = "That task no longer exists." if exc.status == 404 else exc.detail
        return _action_result(
            request, next_url, ok=False, message=message, task_id=task_id, focus=False, status=exc.status
        )
    done = "Completed" if action == "complete" else "Reopened"
    return _action_result(
        request,
        next_url,
        ok=True,
        message=f"{done} “{task.get('title', 'task')}”.",
        task_id=task_id,
        focus=True,
    )


@router.post("/tasks/{task_id}/complete")
async def complete_task(request: Request, task_id: str) -> Response:
    task_id = task_path_id(task_id)
    return await _toggle(request, task_id, "complete")


@router.post("/tasks/{task_id}/reopen")
async def reopen_task(request: Request, task_id: str) -> Response:
    task_id = task_path_id(task_id)
    return await _toggle(request, task_id, "reopen")


@router.get("/tasks/{task_id}/delete", response_class=HTMLResponse)
async def confirm_delete_page(request: Request, task_id: str) -> Response:
    """The no-JavaScript confirmation (with JavaScript a dialog asks instead)."""
    task_id = task_path_id(task_id)
    session = require_session(request)
    task = await _get_task(request, session, task_id)
    next_url = safe_next(request.query_params.get("next"))
    return render(request, "confirm_delete.html", task=task, next=next_url)


@router.post("/tasks/{task_id}/delete")
async def delete_task(request: Request, task_id: str) -> Response:
    task_id = task_path_id(task_id)
    session = require_session(request)
    data = await checked_form(request)
    next_url = safe_next(data.get("next"))
    if next_url.startswith(f"/tasks/{task_id}/"):
        next_url = "/tasks"
    try:
        await api_of(request).delete_task(session.token, task_id)
    except ApiError as exc:
        unauthorized_as_signin(exc)
        if exc.status != 404:  # already gone: what the user wanted
            return _action_result(
                request,
                next_url,
                ok=False,
                message=exc.detail,
                task_id=task_id,
                focus=False,
                status=exc.status,
            )
    return _action_result(request, next_url, ok=True, message="Task deleted.", task_id=task_id, focus=False)
