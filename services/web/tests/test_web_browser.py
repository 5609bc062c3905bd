"""The UI in headless Chromium (Playwright), against the real web and api processes on a real
PostgreSQL (rung L2). Screenshots go to artifacts/screenshots/.

The gateway (/api/v1/events) and the notifier (/api/v1/notifications) are not part of this
run. One test checks the page degrades gracefully without them; another puts clearly named
stand-ins on those two paths (Playwright routes) to drive the live-update and bell code.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime

import httpx
import pytest
from playwright.sync_api import Page, expect
from web_harness import PASSWORD, SCREENSHOTS

pytestmark = [pytest.mark.integration, pytest.mark.browser]


@pytest.fixture
def context_factory(browser, web_service):
    contexts = []

    def make(width: int = 1280, height: int = 900, **kwargs):
        context = browser.new_context(
            base_url=web_service.url,
            viewport={"width": width, "height": height},
            locale="en-US",
            timezone_id=kwargs.pop("timezone_id", "Europe/Berlin"),
            **kwargs,
        )
        context.set_default_timeout(10_000)
        contexts.append(context)
        return context

    yield make
    for context in contexts:
        context.close()


@pytest.fixture
def page(context_factory) -> Page:
    return context_factory().new_page()


def shot(page: Page, name: str, full_page: bool = True) -> None:
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=full_page)


def sign_up(page: Page, prefix: str = "ui") -> str:
    email = f"{prefix}-{uuid.uuid4().hex[:8]}@example.com"
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/signin$"))
    page.get_by_role("link", name="Create an account").click()
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Create account").click()
    expect(page).to_have_url(re.compile(r"/tasks$"))
    return email


def api_as(api_url: str, email: str) -> httpx.Client:
    token = httpx.post(f"{api_url}/api/v1/auth/login", json={"email": email, "password": PASSWORD}).json()[
        "access_token"
    ]
    return httpx.Client(base_url=api_url, headers={"authorization": f"Bearer {token}"})


def no_horizontal_scroll(page: Page) -> bool:
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


def test_sign_up_create_with_every_field_search_filter_complete_delete(page, api_service):
    email = sign_up(page)
    expect(page.get_by_role("status")).to_contain_text("Welcome! Your account is ready.")
    expect(page.get_by_text("You have no tasks yet")).to_be_visible()
    shot(page, "01-empty-list")

    page.get_by_role("link", name="New task").click()
    expect(page.get_by_label("Title")).to_be_focused()
    page.get_by_label("Title").fill("Quarterly report")
    page.get_by_label("Description (optional)").fill("Numbers for Q3, with charts")
    page.get_by_label("Priority").select_option("high")
    page.get_by_label("Tags (optional)").fill("work, Finance")
    page.get_by_label("Due (optional)").fill("2031-07-01T09:30")
    page.get_by_label("Reminder (minutes)").fill("30")
    page.get_by_label("Repeats").select_option("weekly")
    expect(page.get_by_text("Time zone: Europe/Berlin.")).to_be_visible()
    shot(page, "02-new-task-form")
    page.get_by_role("button", name="Create task").click()
    expect(page).to_have_url(re.compile(r"/tasks$"))
    expect(page.get_by_role("status")).to_contain_text("Created “Quarterly report”.")

    api = api_as(api_service.url, email)
    [task] = api.get("/api/v1/tasks").json()["items"]
    assert datetime.fromisoformat(task["due_at"]) == datetime(2031, 7, 1, 7, 30, tzinfo=UTC)  # CEST
    assert (task["priority"], task["tags"], task["recurrence"]) == ("high", ["work", "finance"], "weekly")
    assert (task["remind_before_minutes"], task["description"]) == (30, "Numbers for Q3, with charts")

    api.post(
        "/api/v1/tasks", json={"title": "Buy milk", "tags": ["shop"], "priority": "low"}
    ).raise_for_status()
    api.post(
        "/api/v1/tasks", json={"title": "Book dentist", "due_at": "2020-01-01T10:00:00Z", "tags": ["health"]}
    ).raise_for_status()
    page.reload()
    items = page.locator(".task")
    expect(items).to_have_count(3)
    report = page.locator(".task", has_text="Quarterly report")
    expect(report).to_contain_text("Due Tue 1 Jul 2031, 09:30")
    expect(report).to_contain_text("Repeats weekly")
    expect(report).to_contain_text("Reminder 30 minutes before")
    expect(page.locator(".task", has_text="Book dentist").locator(".badge.overdue")).to_have_text("Overdue")

    # Search.
    page.get_by_role("searchbox", name="Search").fill("CHARTS")
    page.get_by_role("button", name="Apply").click()
    expect(page).to_have_url(re.compile(r"q=CHARTS"))
    expect(items).to_have_count(1)
    expect(page.get_by_role("heading", name="1 task match your filters")).to_be_visible()
    page.get_by_role("link", name="Reset").click()
    expect(items).to_have_count(3)

    # Filters: a tag chip, then status and priority and sort.
    page.get_by_role("navigation", name="Filter by tag").get_by_role("link", name=re.compile("#shop")).click()
    expect(page).to_have_url(re.compile(r"tag=shop"))
    expect(items).to_have_count(1)
    expect(items.first).to_contain_text("Buy milk")
    shot(page, "03-filtered-by-tag")
    page.goto("/tasks")
    page.get_by_label("Due").select_option("overdue")
    page.get_by_role("button", name="Apply").click()
    expect(items).to_have_count(1)
    expect(items.first).to_contain_text("Book dentist")
    page.goto("/tasks")
    page.get_by_label("Sort by").select_option("title")
    page.get_by_role("button", name="Apply").click()
    expect(page.locator(".task-title")).to_have_text(["Book dentist", "Buy milk", "Quarterly report"])

    # Complete in place: the recurring task's next occurrence appears.
    page.get_by_role("button", name="Complete “Quarterly report”").click()
    expect(page.get_by_role("status")).to_contain_text("Completed “Quarterly report”.")
    expect(page.locator(".task.is-done", has_text="Quarterly report")).to_have_count(1)
    expect(page.locator(".task", has_text="Quarterly report")).to_have_count(2)
    expect(page.get_by_role("button", name="Reopen “Quarterly report”")).to_be_focused()
    assert api.get("/api/v1/tasks", params={"status": "done"}).json()["total"] == 1

    # Delete with the confirm dialog; Cancel keeps it.
    page.get_by_role("link", name="Delete “Buy milk”").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("“Buy milk” will be deleted")
    expect(dialog.get_by_role("button", name="Cancel")).to_be_focused()
    shot(page, "04-delete-dialog", full_page=False)
    dialog.get_by_role("button", name="Cancel").click()
    expect(dialog).to_be_hidden()
    expect(page.get_by_role("link", name="Delete “Buy milk”")).to_be_focused()
    page.get_by_role("link", name="Delete “Buy milk”").click()
    dialog.get_by_role("button", name="Delete").click()
    expect(page.get_by_role("status")).to_contain_text("Task deleted.")
    expect(page.locator(".task", has_text="Buy milk")).to_have_count(0)
    assert "Buy milk" not in {t["title"] for t in api.get("/api/v1/tasks").json()["items"]}
    shot(page, "05-after-complete-and-delete")
    api.close()


def test_api_errors_are_shown_next_to_the_fields_and_the_input_is_kept(page):
    sign_up(page, "errors")
    page.goto("/tasks/new")
    page.get_by_label("Title").fill("Water the plants")
    page.get_by_label("Tags (optional)").fill("garden, no spaces!")
    page.get_by_label("Reminder (minutes)").fill("15")
    page.get_by_role("button", name="Create task").click()
    summary = page.get_by_role("alert")
    expect(summary).to_contain_text("Please correct the highlighted fields.")
    expect(summary).to_be_focused()
    tags = page.get_by_label("Tags (optional)")
    expect(tags).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#tags-error")).to_be_visible()
    expect(tags).to_have_value("garden, no spaces!")
    expect(page.get_by_label("Title")).to_have_value("Water the plants")
    shot(page, "06-field-errors")

    tags.fill("garden")
    page.get_by_role("button", name="Create task").click()
    expect(page.locator("#remind_before_minutes-error")).to_contain_text("due")
    expect(page.get_by_label("Reminder (minutes)")).to_have_value("15")
    # Following the summary's link lands on the field.
    page.get_by_role("alert").get_by_role("link", name=re.compile("Reminder")).click()
    expect(page.get_by_label("Reminder (minutes)")).to_be_focused()


def test_keyboard_only_task_creation(page, api_service):
    email = sign_up(page, "keys")
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to main content")).to_be_focused()
    for _ in range(12):  # to "New task", in tab order
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.hasAttribute('data-new-task')"):
            break
    else:
        pytest.fail("New task is not reachable with Tab")
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none", "the focused link shows no focus ring"
    shot(page, "07-keyboard-focus", full_page=False)
    page.keyboard.press("Enter")
    expect(page.get_by_label("Title")).to_be_focused()
    page.keyboard.type("Typed with keys only")
    page.keyboard.press("Tab")
    page.keyboard.type("No mouse was used")
    page.keyboard.press("Tab")  # priority: medium -> high
    expect(page.get_by_label("Priority")).to_be_focused()
    page.keyboard.press("ArrowDown")
    page.keyboard.press("Tab")
    page.keyboard.type("a11y, keyboard")
    page.keyboard.press("Tab")
    expect(page.get_by_label("Due (optional)")).to_be_focused()
    for part in ("08", "15", "2031"):  # month, day, year (en-US), then hour, minute, AM/PM
        page.keyboard.type(part)
    page.keyboard.press("Tab")
    page.keyboard.type("0745A")
    page.keyboard.press("Tab")  # the date picker's button
    page.keyboard.press("Tab")
    expect(page.get_by_label("Reminder (minutes)")).to_be_focused()
    page.keyboard.type("60")
    page.keyboard.press("Tab")
    expect(page.get_by_label("Repeats")).to_be_focused()
    page.keyboard.press("ArrowDown")  # none -> daily
    page.keyboard.press("Tab")
    expect(page.get_by_role("button", name="Create task")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.get_by_role("status")).to_contain_text("Created “Typed with keys only”.")

    with api_as(api_service.url, email) as api:
        [task] = api.get("/api/v1/tasks").json()["items"]
    assert task["description"] == "No mouse was used"
    assert task["priority"] == "high"
    assert task["tags"] == ["a11y", "keyboard"]
    assert datetime.fromisoformat(task["due_at"]) == datetime(2031, 8, 15, 5, 45, tzinfo=UTC)
    assert (task["remind_before_minutes"], task["recurrence"]) == (60, "daily")


def test_no_horizontal_scroll_at_375_px(context_factory, api_service):
    page = context_factory(375, 812).new_page()
    page.goto("/signin")
    assert no_horizontal_scroll(page)
    shot(page, "08-signin-375")
    email = sign_up(page, "narrow")
    with api_as(api_service.url, email) as api:
        api.post(
            "/api/v1/tasks",
            json={
                "title": "A rather long task title that has to wrap nicely on a small phone screen",
                "description": "Supercalifragilisticexpialidocious-and-an-unbroken-string-of-characters-" * 2,
                "tags": ["one", "two", "three", "four-long-tag-name", "five"],
                "due_at": "2020-01-01T10:00:00Z",
                "priority": "high",
                "recurrence": "monthly",
                "remind_before_minutes": 1440,
            },
        ).raise_for_status()
        api.post("/api/v1/tasks", json={"title": "Short"}).raise_for_status()
    page.reload()
    expect(page.locator(".task")).to_have_count(2)
    assert no_horizontal_scroll(page)
    shot(page, "09-tasks-375")
    page.get_by_role("link", name="New task").click()
    assert no_horizontal_scroll(page)
    shot(page, "10-new-task-375")
    page.goto("/tasks")
    page.get_by_role("button", name=re.compile("Notifications")).click()
    expect(page.locator("#bell-panel")).to_be_visible()
    assert no_horizontal_scroll(page)
    box = page.locator("#bell-panel").bounding_box()
    assert box["x"] >= 0
    assert box["x"] + box["width"] <= 375


def test_layout_at_1920_px(context_factory, api_service):
    page = context_factory(1920, 1080).new_page()
    email = sign_up(page, "wide")
    with api_as(api_service.url, email) as api:
        for n, priority in enumerate(("high", "medium", "low")):
            api.post(
                "/api/v1/tasks", json={"title": f"Wide task {n}", "priority": priority, "tags": ["desk"]}
            ).raise_for_status()
    page.reload()
    assert no_horizontal_scroll(page)
    main = page.locator("main").bounding_box()
    assert main["width"] <= 1160  # a readable measure, centred
    assert abs(main["x"] - (1920 - main["x"] - main["width"])) < 2
    tops = {
        round(page.locator(f"{s}").bounding_box()["y"])
        for s in ("#q", "#status", "#filter-priority", "#order")
    }
    assert len(tops) == 1, "the filters fit on one row"
    shot(page, "11-tasks-1920")


def test_live_updates_and_bell_degrade_without_gateway_and_notifier(page):
    sign_up(page, "alone")
    live = page.locator("#live-status")
    expect(live).to_have_attribute("data-state", "unavailable")
    expect(live).to_contain_text("Live updates unavailable")
    bell = page.locator("[data-bell]")
    expect(bell).to_have_attribute("data-state", "unavailable")
    button = page.get_by_role("button", name="Notifications (unavailable)")
    button.click()
    expect(page.locator("#bell-panel")).to_contain_text("Notifications are unavailable right now.")
    expect(page.locator("[data-bell-count]")).to_be_hidden()
    shot(page, "12-degraded", full_page=False)
    page.keyboard.press("Escape")
    expect(page.locator("#bell-panel")).to_be_hidden()
    expect(button).to_be_focused()
    # The page itself still works.
    page.get_by_role("link", name="New task").click()
    page.get_by_label("Title").fill("Works without live updates")
    page.get_by_role("button", name="Create task").click()
    expect(page.locator(".task")).to_have_count(1)


def test_live_updates_and_bell_with_stand_ins_for_gateway_and_notifier(page, api_service):
    """Stand-ins (test doubles) answer /api/v1/events and /api/v1/notifications in the browser."""
    email = sign_up(page, "live")
    api = api_as(api_service.url, email)
    notifications = [
        {
            "id": "n1",
            "message": "Reminder: “Old thing” is due",
            "created_at": "2031-01-01T09:00:00Z",
            "read": False,
        }
    ]
    marked: list[str] = []

    def stand_in_notifier(route):
        url = route.request.url
        if url.endswith("/read-all"):
            marked.append("all")
            for n in notifications:
                n["read"] = True
            return route.fulfill(status=204)
        if url.endswith("/read"):
            marked.append(url.rsplit("/", 2)[-2])
            return route.fulfill(status=204)
        unread = sum(not n["read"] for n in notifications)
        return route.fulfill(json={"items": notifications, "unread_count": unread})

    def stand_in_gateway(route):
        # A change made elsewhere (another tab, another device) while this page is open.
        created = api.post("/api/v1/tasks", json={"title": "Made in another tab"}).json()
        notifications.insert(
            0,
            {
                "id": "n2",
                "message": "Reminder: “Made in another tab”",
                "created_at": created["created_at"],
                "read": False,
            },
        )
        envelope = {
            "event_id": str(uuid.uuid4()),
            "type": "task.created",
            "task_id": created["id"],
            "task": created,
        }
        reminder = {
            "type": "reminder.due",
            "task": {"id": created["id"], "title": "Pay bills", "due_at": None},
        }
        body = (
            "retry: 600000\n\n"
            f"id: 1\nevent: task.created\ndata: {json.dumps(envelope)}\n\n"
            f"id: 2\nevent: reminder.due\ndata: {json.dumps(reminder)}\n\n"
        )
        route.fulfill(
            status=200, headers={"content-type": "text/event-stream", "cache-control": "no-store"}, body=body
        )

    page.route("**/api/v1/notifications**", stand_in_notifier)
    page.route("**/api/v1/events", stand_in_gateway)
    page.goto("/tasks")

    status = page.get_by_role("status")
    expect(status).to_contain_text("“Made in another tab” was added.")
    expect(status).to_contain_text("Reminder: “Pay bills” is due soon.")
    expect(page.locator(".task", has_text="Made in another tab")).to_have_count(1)  # list refreshed
    expect(page.locator("[data-bell-count]")).to_have_text("2")
    shot(page, "13-live-toasts", full_page=False)

    page.get_by_role("button", name="Notifications, 2 unread").click()
    panel = page.locator("#bell-panel")
    expect(panel.locator("li")).to_have_count(2)
    shot(page, "14-bell-open", full_page=False)
    panel.get_by_role("button", name="Mark “Reminder: “Old thing” is due” as read").click()
    expect(page.locator("[data-bell-count]")).to_have_text("1")
    panel.get_by_role("button", name="Mark all read").click()
    expect(page.locator("[data-bell-count]")).to_be_hidden()
    assert marked == ["n1", "all"]
    api.close()


def axe_violations(page: Page) -> list[str]:
    """axe-core (bundled by axe-playwright-python) against WCAG 2.1 A and AA."""
    from axe_playwright_python.sync_playwright import Axe

    options = {"runOnly": {"type": "tag", "values": ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]}}
    results = Axe().run(page, options={**options, "resultTypes": ["violations"]})
    return [
        f"{v['id']} ({v['impact']}): {v['help']} -> {[n['target'] for n in v['nodes']][:3]}"
        for v in results.response["violations"]
    ]


@pytest.mark.parametrize("width", [375, 1280])
def test_pages_pass_axe_wcag_aa_checks(context_factory, api_service, width):
    page = context_factory(width, 900).new_page()
    page.goto("/signin")
    found = {"signin": axe_violations(page)}
    email = sign_up(page, "axe")
    with api_as(api_service.url, email) as api:
        overdue = api.post(
            "/api/v1/tasks",
            json={"title": "Overdue", "due_at": "2020-01-01T10:00:00Z", "tags": ["a"], "priority": "high"},
        ).json()
        done = api.post("/api/v1/tasks", json={"title": "Done", "description": "d", "priority": "low"}).json()
        api.post(f"/api/v1/tasks/{done['id']}/complete").raise_for_status()
    page.goto("/tasks?tag=a")
    found["tasks"] = axe_violations(page)
    page.get_by_role("button", name=re.compile("Notifications")).click()
    found["bell"] = axe_violations(page)
    page.goto(f"/tasks/{overdue['id']}/edit")
    page.get_by_label("Tags (optional)").fill("not valid!")
    page.get_by_role("button", name="Save changes").click()
    expect(page.get_by_role("alert")).to_be_visible()
    found["form-with-errors"] = axe_violations(page)
    page.goto(f"/tasks/{overdue['id']}/delete")
    found["confirm-delete"] = axe_violations(page)
    page.goto("/tasks")
    page.get_by_role("link", name="Delete “Overdue”").click()
    expect(page.get_by_role("dialog")).to_be_visible()
    found["delete-dialog"] = axe_violations(page)
    assert {name: v for name, v in found.items() if v} == {}
