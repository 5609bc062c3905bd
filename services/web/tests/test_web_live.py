"""The whole app in process mode (testkit.stack: api, notifier, gateway and web, each with a
real daprd; real Kafka with SASL_SSL/SCRAM, real PostgreSQL, the Dapr scheduler, nginx routing
like the ingress) driven from headless Chromium: a change made in one tab appears live in
another, and a reminder reaches the bell. No stand-ins. Rung L2 (processes, not pods)."""

from __future__ import annotations

import contextlib
import json
import re
import time
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from playwright.sync_api import expect
from test_web_browser import shot, sign_up
from web_harness import PASSWORD

pytestmark = [pytest.mark.integration, pytest.mark.browser]

CHEAP_HASHES = {
    "TODO_ARGON2_TIME_COST": "1",
    "TODO_ARGON2_MEMORY_KIB": "8192",
    "TODO_ARGON2_PARALLELISM": "1",
}


@pytest.fixture(scope="module")
def app_stack(postgres, kafka, dapr):
    from testkit.stack import Stack

    with Stack.start(
        postgres=postgres, kafka=kafka, dapr=dapr, topic_suffix=uuid.uuid4().hex[:8], env=CHEAP_HASHES
    ) as stack:
        yield stack


@pytest.fixture
def tabs(browser, app_stack):
    context = browser.new_context(base_url=app_stack.url, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(20_000)
    yield context
    context.close()


def event_path_log(stack) -> str:
    """The api's, the gateway's and the web's log of the last 15 s, in time order: where a
    request or a change stopped on its way."""
    since = (datetime.now(UTC) - timedelta(seconds=15)).isoformat(timespec="milliseconds")
    lines = []
    for name in ("api", "gateway", "web"):
        for line in (stack.folder / "logs" / f"{name}.log").read_text().splitlines():
            with contextlib.suppress(ValueError, KeyError):
                record = json.loads(line)
                if record["time"] >= since and not record.get("path", "").endswith(("/healthz", "/readyz")):
                    error = f" ({record['error']})" if "error" in record else ""
                    lines.append((record["time"], f"{name}: {record['message']}{error}"))
    return "\n".join(f"{at} {text}" for at, text in sorted(lines))


@contextlib.contextmanager
def logs_on_failure(stack):
    """A failed expectation comes with the services' log of its last 15 s."""
    try:
        yield
    except AssertionError as failure:
        raise AssertionError(f"{failure}\n{event_path_log(stack)}") from None


def test_a_change_in_one_tab_appears_live_in_the_other_and_a_reminder_rings_the_bell(tabs, app_stack):
    with logs_on_failure(app_stack):
        first = tabs.new_page()
        email = sign_up(first, "two-tabs")
        second = tabs.new_page()
        second.goto("/tasks")
        for page in (first, second):
            expect(page.locator("#live-status")).to_have_attribute("data-state", "on")

        first.goto("/tasks/new")
        first.get_by_label("Title").fill("Typed in the first tab")
        first.get_by_role("button", name="Create task").click()
        # The task is committed once the first tab is sent back to the list. Timed from there: with
        # six CPU hogs on this machine's two cores the browser alone took 2 s from the click to the POST.
        expect(first).to_have_url(re.compile(r"/tasks$"))
        started = time.monotonic()
        # 2 s is the spec's target (bench/gateway.py measures it); the margin is for CI's load.
        expect(second.locator(".task", has_text="Typed in the first tab")).to_have_count(1, timeout=10_000)
        seen_after = time.monotonic() - started
        expect(second.get_by_role("status")).to_contain_text("“Typed in the first tab” was added.")
        shot(second, "20-live-second-tab", full_page=False)

        # A reminder due now (through the api, as another device would): both tabs ring.
        token = httpx.post(
            f"{app_stack.url}/api/v1/auth/login", json={"email": email, "password": PASSWORD}
        ).json()["access_token"]
        due = (datetime.now(UTC) + timedelta(minutes=1, seconds=5)).isoformat()
        created = httpx.post(
            f"{app_stack.url}/api/v1/tasks",
            json={"title": "Call the plumber", "due_at": due, "remind_before_minutes": 1},
            headers={"authorization": f"Bearer {token}"},
        )
        assert created.status_code == 201, created.text
        for page in (first, second):
            expect(page.locator("[data-bell-count]")).to_have_text("1", timeout=40_000)
        expect(second.get_by_role("status")).to_contain_text("Call the plumber")
        shot(second, "21-live-reminder", full_page=False)
        print(f"task visible in the second tab {seen_after:.2f}s after the first was back on the list")
