"""Rendering: the Jinja2 environment, the shared page context, list filters and task presentation."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, fields, replace
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from starlette.datastructures import QueryParams

from todo_web.forms import due_state, format_minutes, format_time
from todo_web.session import commit_cookies, csrf_token, read_flashes, read_session, user_zone

PACKAGE = Path(__file__).parent
STATIC_DIR = PACKAGE / "static"
templates = Jinja2Templates(directory=str(PACKAGE / "templates"))


@cache
def _static_version(name: str) -> str:
    try:
        return hashlib.sha256((STATIC_DIR / name).read_bytes()).hexdigest()[:12]
    except OSError:
        return "0"


def static_url(name: str) -> str:
    """``/static/<name>?v=<content hash>``: cacheable, and a new release busts it."""
    return f"/static/{name}?v={_static_version(name)}"


templates.env.globals["static"] = static_url


def render(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    """A page with what every page needs: the user, the CSRF token, the zone, pending flashes."""
    flashes = read_flashes(request)
    request.state.flashes_shown = bool(flashes)
    context = {
        "user": read_session(request),
        "csrf_token": csrf_token(request),
        "tz": user_zone(request),
        "flashes": flashes,
        **context,
    }
    response = templates.TemplateResponse(request, template, context, status_code=status_code)
    commit_cookies(request, response, request.app.state.settings)
    return response


# --- the task list ------------------------------------------------------------------------

STATUS_OPTIONS = (("all", "All"), ("open", "Open"), ("done", "Done"))
PRIORITY_OPTIONS = (("", "Any"), ("high", "High"), ("medium", "Medium"), ("low", "Low"))
DUE_OPTIONS = (("", "Any time"), ("overdue", "Overdue"), ("today", "Due today"), ("week", "Due this week"))
SORT_OPTIONS = (("created", "Created"), ("due", "Due date"), ("priority", "Priority"), ("title", "Title"))
ORDER_OPTIONS = (("", "Default"), ("asc", "Ascending"), ("desc", "Descending"))
# "Default" order per sort: newest first, soonest due first, most important first, A to Z.
NATURAL_ORDER = {"created": "desc", "due": "asc", "priority": "desc", "title": "asc"}


TAG = re.compile(r"[a-z0-9-]{1,32}")


def _choice(value: str | None, options: tuple[tuple[str, str], ...], default: str) -> str:
    return value if value in {key for key, _ in options} else default


@dataclass(frozen=True)
class Filters:
    """The list's search, filters, sort and page, as in the URL; unknown values fall back to defaults."""

    q: str = ""
    status: str = "all"
    priority: str = ""
    tag: str = ""
    due: str = ""
    sort: str = "created"
    order: str = ""  # empty: the sort's natural order (NATURAL_ORDER)
    page: int = 1

    @classmethod
    def from_query(cls, query: QueryParams) -> Filters:
        try:
            page = max(1, min(int(query.get("page") or 1), 100_000))
        except ValueError:
            page = 1
        return cls(
            q=(query.get("q") or "").strip()[:200],
            status=_choice(query.get("status"), STATUS_OPTIONS, "all"),
            priority=_choice(query.get("priority"), PRIORITY_OPTIONS, ""),
            tag=tag if TAG.fullmatch(tag := (query.get("tag") or "").strip().lower()) else "",
            due=_choice(query.get("due"), DUE_OPTIONS, ""),
            sort=_choice(query.get("sort"), SORT_OPTIONS, "created"),
            order=_choice(query.get("order"), ORDER_OPTIONS, ""),
            page=page,
        )

    @property
    def effective_order(self) -> str:
        return self.order or NATURAL_ORDER[self.sort]

    @property
    def filtered(self) -> bool:
        return bool(self.q or self.priority or self.tag or self.due or self.status != "all")

    def api_params(self, page_size: int, tz: str) -> dict[str, Any]:
        params: dict[str, Any] = {
            "q": self.q,
            "status": self.status,
            "priority": self.priority,
            "tag": self.tag,
            "due": self.due,
            "sort": self.sort,
            "order": self.effective_order,
            "limit": page_size,
            "offset": (self.page - 1) * page_size,
        }
        if self.due:
            params["tz"] = tz
        return params

    def url(self, **changes: Any) -> str:
        """``/tasks?...`` with these filters, changed as given (None or "" drops a parameter)."""
        current = replace(self, **{k: v for k, v in changes.items() if v is not None})
        defaults = Filters()
        params = {}
        for f in fields(self):
            if f.name in changes and changes[f.name] is None:
                continue
            value = getattr(current, f.name)
            if value != getattr(defaults, f.name) and value != "":
                params[f.name] = value
        return "/tasks" + (f"?{urlencode(params)}" if params else "")


def tag_name(tag: dict[str, Any]) -> str:
    return str(tag.get("name") or tag.get("tag") or "")


def present_task(task: dict[str, Any], tz: str) -> dict[str, Any]:
    """The api's task plus what the list shows: due state and times in the user's zone."""
    return {
        **task,
        "id": str(task.get("id")),
        "due_state": due_state(task, tz),
        "due_text": format_time(task.get("due_at"), tz),
        "remind_text": format_minutes(task.get("remind_before_minutes")),
        "priority": task.get("priority") or "medium",
        "tags": list(task.get("tags") or []),
    }


def list_context(
    filters: Filters, body: dict[str, Any] | list[Any], tags: list[dict[str, Any]], tz: str, page_size: int
) -> dict[str, Any]:
    if isinstance(body, list):
        items, total = body, len(body)
    else:
        items = body.get("items") or body.get("tasks") or []
        total = int(body.get("total", len(items)) or 0)
    pages = max(1, -(-total // page_size))
    tag_list = [{"name": tag_name(t), "count": t.get("count", 0)} for t in tags if tag_name(t)]
    tag_options = [("", "Any tag")] + [(t["name"], f"#{t['name']} ({t['count']})") for t in tag_list]
    if filters.tag and filters.tag not in {t["name"] for t in tag_list}:
        tag_options.append((filters.tag, f"#{filters.tag}"))
    return {
        "filters": filters,
        "filtered": filters.filtered,
        "tasks": [present_task(task, tz) for task in items],
        "total": total,
        "page": filters.page,
        "pages": pages,
        "tags": tag_list,
        "here": filters.url(),
        "url_with": filters.url,
        "status_options": STATUS_OPTIONS,
        "priority_options": PRIORITY_OPTIONS,
        "due_options": DUE_OPTIONS,
        "sort_options": SORT_OPTIONS,
        "order_options": ORDER_OPTIONS,
        "tag_options": tag_options,
    }
