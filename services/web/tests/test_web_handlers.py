"""The web's pages and forms against the REAL api on a real PostgreSQL, both running as processes
(rung L2: real engines, no Dapr; the web calls TODO_API_URL directly)."""

from __future__ import annotations

import json
import re
import time
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import jwt
import pytest
from web_harness import csrf_from

pytestmark = pytest.mark.integration


class WebClient:
    """A browser without JavaScript: cookies, forms with the CSRF token, no redirects followed."""

    def __init__(self, base_url: str) -> None:
        self.http = httpx.Client(base_url=base_url, follow_redirects=False, headers={"accept": "text/html"})

    def close(self) -> None:
        self.http.close()

    def get(self, path: str, **kwargs) -> httpx.Response:
        return self.http.get(path, **kwargs)

    def post(self, path: str, data: dict | None = None, *, csrf: bool = True, **kwargs) -> httpx.Response:
        data = dict(data or {})
        if csrf:
            if "todo_csrf" not in self.http.cookies:
                self.get("/signin")
            data.setdefault("csrf_token", self.http.cookies["todo_csrf"])
        return self.http.post(path, data=data, **kwargs)

    def sign_in(self, email: str, password: str) -> httpx.Response:
        response = self.post("/signin", {"email": email, "password": password, "next": "/tasks"})
        assert response.status_code == 303, response.text
        return response

    def follow(self, response: httpx.Response) -> httpx.Response:
        assert response.status_code in (302, 303), response.text[:500]
        return self.get(response.headers["location"])


@pytest.fixture
def web(web_service):
    client = WebClient(web_service.url)
    yield client
    client.close()


@pytest.fixture
def signed_in(web, make_user):
    user = make_user()
    web.sign_in(user.email, user.password)
    return web, user


def task_titles(html: str) -> list[str]:
    return re.findall(r'<h3 class="task-title"><a [^>]*>([^<]*)</a>', html)


def field_error(html: str, name: str) -> str | None:
    found = re.search(
        rf'<p class="field-error" id="{name}-error">(?:<span[^>]*>[^<]*</span>)?([^<]*)</p>', html
    )
    return found.group(1).strip() if found else None


# --- health ---------------------------------------------------------------------------------


def test_ready_when_the_api_answers(web_service):
    ready = httpx.get(f"{web_service.url}/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"api": "ok"}
    assert "http_requests_total" in httpx.get(f"{web_service.url}/metrics").text


def test_logs_are_json_with_request_ids(web_service, web):
    web.get("/signin", headers={"x-request-id": "web-test-log-1"})
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # the access line is written just after the answer
        lines = [line for line in web_service.log_path.read_text().splitlines() if "web-test-log-1" in line]
        if lines:
            break
        time.sleep(0.05)
    record = json.loads(lines[-1])
    assert (record["service"], record["route"], record["status"]) == ("web", "/signin", 200)


# --- accounts -------------------------------------------------------------------------------


def test_sign_up_sets_the_session_cookie_the_other_services_accept(web, api_service):
    email = "New.Person@Example.com"
    signup = web.post("/signup", {"email": email, "password": "long enough pass", "next": "/tasks"})
    assert signup.status_code == 303
    assert signup.headers["location"] == "/tasks"
    cookie = next(h for h in signup.headers.get_list("set-cookie") if h.startswith("todo_session="))
    assert "HttpOnly" in cookie
    assert "SameSite=lax" in cookie
    assert "Secure" not in cookie  # a test run; staging and production set Secure
    # The gateway and the notifier verify the same cookie: the api does too.
    me = httpx.get(
        f"{api_service.url}/api/v1/auth/me", cookies={"todo_session": web.http.cookies["todo_session"]}
    )
    assert me.status_code == 200
    assert me.json()["email"].lower() == email.lower()
    page = web.follow(signup)
    assert page.status_code == 200
    assert "Welcome! Your account is ready." in page.text
    assert "You have no tasks yet" in page.text


def test_sign_up_with_a_taken_email_says_so_next_to_the_field(web, make_user):
    user = make_user()
    page = web.post("/signup", {"email": user.email.upper(), "password": "long enough pass"})
    assert page.status_code == 409
    assert "already exists" in field_error(page.text, "email")
    assert f'value="{user.email.upper()}"' in page.text
    assert 'aria-invalid="true"' in page.text


def test_sign_up_with_a_short_password_shows_the_api_field_error(web):
    page = web.post("/signup", {"email": "short@example.com", "password": "short"})
    assert page.status_code == 422
    assert field_error(page.text, "password")
    assert 'value="short@example.com"' in page.text


def test_sign_in_wrong_password_keeps_the_email(web, make_user):
    user = make_user()
    page = web.post("/signin", {"email": user.email, "password": "not the password"})
    assert page.status_code == 401
    assert "Email or password is incorrect." in page.text
    assert f'value="{user.email}"' in page.text
    assert "todo_session" not in web.http.cookies


def test_sign_in_returns_to_next_and_sign_out_clears_the_session(web, make_user):
    user = make_user()
    gate = web.get("/tasks?tag=home")
    assert gate.status_code == 303
    login_page = web.follow(gate)
    assert 'name="next" value="/tasks?tag=home"' in login_page.text
    response = web.post(
        "/signin", {"email": user.email, "password": user.password, "next": "/tasks?tag=home"}
    )
    assert response.headers["location"] == "/tasks?tag=home"
    assert web.get("/tasks").status_code == 200
    out = web.post("/signout")
    assert out.headers["location"] == "/signin"
    assert "todo_session" not in web.http.cookies
    assert web.get("/tasks").status_code == 303


def test_a_forged_session_is_sent_back_to_sign_in(web):
    claims = {
        "sub": str(uuid.UUID(int=0)),
        "email": "x@example.com",
        "exp": 9_999_999_999,
        "iat": 0,
        "iss": "todo",
    }
    forged = jwt.encode(claims, "not the key the api signs with, but long enough", algorithm="HS256")
    web.http.cookies.set("todo_session", forged)
    response = web.get("/tasks")
    assert response.status_code == 303
    assert response.headers["location"].startswith("/signin")
    cleared = [h for h in response.headers.get_list("set-cookie") if h.startswith("todo_session=")]
    assert cleared
    assert "Max-Age=0" in cleared[0]


# --- creating and editing -------------------------------------------------------------------


def test_create_a_task_with_every_field(signed_in):
    web, user = signed_in
    form = web.get("/tasks/new")
    assert form.status_code == 200
    for name in ("title", "description", "priority", "tags", "due_at", "remind_before_minutes", "recurrence"):
        assert f'<label for="{name}">' in form.text, name
    response = web.post(
        "/tasks/new",
        {
            "title": "  File taxes ",
            "description": "Forms A and B",
            "priority": "high",
            "tags": "Money, home, money",
            "due_at": "2031-04-15T17:30",
            "tz": "America/New_York",
            "remind_before_minutes": "1440",
            "recurrence": "monthly",
            "next": "/tasks",
        },
    )
    assert response.status_code == 303
    [task] = user.tasks()
    assert task["title"] == "File taxes"
    assert task["description"] == "Forms A and B"
    assert task["priority"] == "high"
    assert task["tags"] == ["money", "home"]
    assert datetime.fromisoformat(task["due_at"]) == datetime(2031, 4, 15, 21, 30, tzinfo=UTC)  # EDT is UTC-4
    assert task["remind_before_minutes"] == 1440
    assert task["recurrence"] == "monthly"
    page = web.follow(response)
    assert "Created “File taxes”." in page.text
    assert task_titles(page.text) == ["File taxes"]
    assert "High priority" in page.text
    assert "Repeats monthly" in page.text
    assert "Reminder 1 day before" in page.text
    assert 'href="/tasks?tag=money"' in page.text


def test_api_field_errors_show_next_to_the_fields_and_the_form_keeps_the_input(signed_in):
    web, user = signed_in
    typed = {
        "title": "Water plants",
        "description": "Balcony",
        "priority": "low",
        "tags": "garden, bad tag!",
        "due_at": "",
        "tz": "UTC",
        "remind_before_minutes": "15",
        "recurrence": "weekly",
    }
    page = web.post("/tasks/new", typed)
    assert page.status_code == 422
    assert field_error(page.text, "tags")
    assert user.tasks() == []
    # Fix the tags: now the api says the reminder and the recurrence need a due date.
    page = web.post("/tasks/new", {**typed, "tags": "garden"})
    assert page.status_code == 422
    assert "due" in field_error(page.text, "remind_before_minutes").lower()
    assert "due" in field_error(page.text, "recurrence").lower()
    assert 'value="Water plants"' in page.text
    assert ">Balcony</textarea>" in page.text
    assert 'value="garden"' in page.text
    assert 'value="15"' in page.text
    assert '<option value="weekly" selected>' in page.text
    assert '<option value="low" selected>' in page.text
    assert 'role="alert"' in page.text
    assert user.tasks() == []


def test_a_too_long_title_is_refused_by_the_api(signed_in):
    web, _ = signed_in
    page = web.post("/tasks/new", {"title": "x" * 256, "priority": "medium", "recurrence": "none"})
    assert page.status_code == 422
    assert field_error(page.text, "title")


def test_a_malformed_date_is_caught_before_the_api(signed_in):
    web, user = signed_in
    page = web.post("/tasks/new", {"title": "x", "due_at": "next tuesday", "tz": "UTC"})
    assert page.status_code == 422
    assert field_error(page.text, "due_at")
    assert 'value="next tuesday"' in page.text
    assert user.tasks() == []


def test_edit_changes_every_field_and_can_clear_the_schedule(signed_in):
    web, user = signed_in
    task = user.create_task(
        title="Call mum",
        due_at="2031-06-01T10:00:00+00:00",
        remind_before_minutes=30,
        recurrence="weekly",
        tags=["family"],
    )
    web.http.cookies.set("todo_tz", "Europe/Paris")
    page = web.get(f"/tasks/{task['id']}/edit")
    assert page.status_code == 200
    assert 'value="2031-06-01T12:00"' in page.text  # shown in the browser's zone
    assert 'value="family"' in page.text
    response = web.post(
        f"/tasks/{task['id']}/edit",
        {
            "title": "Call mum and dad",
            "description": "Sunday",
            "priority": "high",
            "tags": "family, phone",
            "due_at": "",
            "tz": "Europe/Paris",
            "remind_before_minutes": "",
            "recurrence": "none",
            "next": "/tasks?q=call",
        },
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/tasks?q=call"
    [changed] = user.tasks()
    assert changed["title"] == "Call mum and dad"
    assert changed["description"] == "Sunday"
    assert (changed["priority"], changed["tags"]) == ("high", ["family", "phone"])
    assert (changed["due_at"], changed["remind_before_minutes"], changed["recurrence"]) == (
        None,
        None,
        "none",
    )


def test_another_users_task_is_not_found(web, make_user):
    owner, other = make_user("owner"), make_user("other")
    task = owner.create_task(title="Private")
    web.sign_in(other.email, other.password)
    page = web.get(f"/tasks/{task['id']}/edit")
    assert page.status_code == 404
    assert "Private" not in page.text
    assert web.post(f"/tasks/{task['id']}/delete").status_code == 303  # already "gone" for this user
    assert owner.tasks()[0]["title"] == "Private"
    assert web.get("/tasks/not-a-uuid/edit").status_code == 404


def test_state_changes_without_the_csrf_token_are_refused(signed_in):
    web, user = signed_in
    task = user.create_task(title="Keep me")
    assert web.post("/tasks/new", {"title": "Sneaky"}, csrf=False).status_code == 403
    assert web.post(f"/tasks/{task['id']}/delete", {"csrf_token": "forged" * 8}).status_code == 403
    assert web.post(f"/tasks/{task['id']}/complete", csrf=False).status_code == 403
    assert [t["title"] for t in user.tasks()] == ["Keep me"]
    assert user.tasks()[0]["completed"] is False


# --- the list -------------------------------------------------------------------------------


def test_search_filters_sort_and_pages(signed_in):
    web, user = signed_in
    now = datetime.now(UTC)
    user.create_task(title="Buy milk", description="semi-skimmed", tags=["shop"], priority="low")
    user.create_task(title="Overdue report", due_at=(now - timedelta(days=2)).isoformat(), priority="high")
    user.create_task(title="Later thing", due_at=(now + timedelta(days=30)).isoformat())
    done = user.create_task(title="Done already", tags=["shop"])
    user.api.post(f"/api/v1/tasks/{done['id']}/complete").raise_for_status()
    for n in range(22):
        user.create_task(title=f"Bulk {n:02d}", tags=["bulk"])

    first = web.get("/tasks")
    assert "26 tasks" in first.text
    assert len(task_titles(first.text)) == 20
    assert task_titles(first.text)[0] == "Bulk 21"  # newest first
    assert "Page 1 of 2" in first.text
    second = web.get("/tasks?page=2")
    assert len(task_titles(second.text)) == 6
    assert web.get("/tasks?page=9").headers["location"] == "/tasks?page=2"

    assert task_titles(web.get("/tasks?q=SKIMMED").text) == ["Buy milk"]
    assert task_titles(web.get("/tasks?tag=shop&status=open").text) == ["Buy milk"]
    assert task_titles(web.get("/tasks?status=done").text) == ["Done already"]
    assert task_titles(web.get("/tasks?priority=high").text) == ["Overdue report"]
    overdue = web.get("/tasks?due=overdue")
    assert task_titles(overdue.text) == ["Overdue report"]
    assert '<span class="badge overdue">Overdue</span>' in overdue.text
    titles = task_titles(web.get("/tasks?sort=title&q=a").text)
    assert titles == sorted(titles, key=str.lower)
    assert task_titles(web.get("/tasks?sort=due&tag=&q=e").text)[:2] == ["Overdue report", "Later thing"]
    assert "No tasks match your filters" in web.get("/tasks?q=zzzz").text
    # The tag chips carry counts and filter the list.
    assert re.search(r'href="/tasks\?tag=bulk"[^>]*>#bulk <span class="chip-count">22</span>', first.text)


def test_due_today_marker_and_filter_use_the_browsers_zone(signed_in):
    web, user = signed_in
    now = datetime.now(UTC)
    # A browser zone where it is about noon now, so "in 5 minutes" is today whatever the UTC hour.
    offset = 12 - now.hour  # hours east of UTC; Etc/GMT names count the other way round
    zone = "Etc/GMT" + (f"{-offset:+d}" if offset else "")
    user.create_task(title="Soon today", due_at=(now + timedelta(minutes=5)).isoformat())
    web.http.cookies.set("todo_tz", zone)
    page = web.get("/tasks?due=today")
    assert task_titles(page.text) == ["Soon today"]
    assert '<span class="badge today">Due today</span>' in page.text


def test_the_partial_is_the_list_alone(signed_in):
    web, user = signed_in
    user.create_task(title="In the partial")
    part = web.get("/tasks/partial?q=partial")
    assert part.status_code == 200
    assert "<html" not in part.text
    assert task_titles(part.text) == ["In the partial"]
    assert 'name="next" value="/tasks?q=partial"' in part.text


# --- complete, reopen, delete ----------------------------------------------------------------


def test_complete_and_reopen_without_javascript(signed_in):
    web, user = signed_in
    task = user.create_task(title="Feed cat")
    response = web.post(f"/tasks/{task['id']}/complete", {"next": "/tasks?status=open"})
    assert response.headers["location"] == "/tasks?status=open"
    assert user.tasks()[0]["completed"] is True
    page = web.follow(response)
    assert "Completed “Feed cat”." in page.text
    assert task_titles(page.text) == []
    web.post(f"/tasks/{task['id']}/reopen")
    assert user.tasks()[0]["completed"] is False


def test_complete_a_recurring_task_in_place_creates_the_next_one(signed_in):
    web, user = signed_in
    task = user.create_task(title="Standup", due_at="2031-01-06T09:00:00+00:00", recurrence="daily")
    response = web.post(f"/tasks/{task['id']}/complete", headers={"accept": "application/json"})
    assert response.status_code == 200
    assert response.json() == {
        "ok": True,
        "message": "Completed “Standup”.",
        "task_id": task["id"],
        "focus_task_id": task["id"],
    }
    open_tasks = user.tasks(status="open")
    assert [(t["title"], t["due_at"][:10]) for t in open_tasks] == [("Standup", "2031-01-07")]


def test_delete_asks_first_without_javascript(signed_in):
    web, user = signed_in
    task = user.create_task(title="Old junk")
    confirm = web.get(f"/tasks/{task['id']}/delete?next=/tasks%3Fq%3Djunk")
    assert confirm.status_code == 200
    assert "Delete “Old junk”?" in confirm.text
    assert f'action="/tasks/{task["id"]}/delete"' in confirm.text
    assert user.tasks() != []
    response = web.post(
        f"/tasks/{task['id']}/delete", {"csrf_token": csrf_from(confirm.text), "next": "/tasks?q=junk"}
    )
    assert response.headers["location"] == "/tasks?q=junk"
    assert user.tasks() == []
    assert "Task deleted." in web.follow(response).text


def test_delete_in_place_answers_json(signed_in):
    web, user = signed_in
    task = user.create_task(title="Scratch")
    response = web.post(f"/tasks/{task['id']}/delete", headers={"accept": "application/json"})
    assert response.json()["ok"] is True
    assert user.tasks() == []
    missing = web.post(f"/tasks/{task['id']}/complete", headers={"accept": "application/json"})
    assert missing.status_code == 404
    assert missing.json() == {
        "ok": False,
        "message": "That task no longer exists.",
        "task_id": task["id"],
        "focus_task_id": None,
    }
