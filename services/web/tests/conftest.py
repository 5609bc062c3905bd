"""Fixtures for the web's tests: the real api (on a real PostgreSQL) and the web, as processes;
Chromium driven by Playwright; users made through the api."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from web_harness import PASSWORD, SCREENSHOTS, ServiceProcess, api_env

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="session")
def web_database(postgres) -> str:
    """One database for the web's tests; every test uses its own users in it."""
    return postgres.create_database(f"web_{uuid.uuid4().hex[:8]}")


@pytest.fixture(scope="session")
def api_service(web_database) -> Iterator[ServiceProcess]:
    service = ServiceProcess.start("api", "todo_api.main", api_env(web_database))
    yield service
    service.stop()


@pytest.fixture(scope="session")
def web_service(api_service) -> Iterator[ServiceProcess]:
    service = ServiceProcess.start("web", "todo_web.main", {"TODO_API_URL": api_service.url})
    yield service
    service.stop()


@dataclass
class User:
    email: str
    password: str
    token: str
    api: httpx.Client  # the api, as this user (Bearer)

    def create_task(self, **fields) -> dict:
        response = self.api.post("/api/v1/tasks", json=fields)
        assert response.status_code == 201, response.text
        return response.json()

    def tasks(self, **params) -> list[dict]:
        response = self.api.get("/api/v1/tasks", params={"limit": 100, **params})
        assert response.status_code == 200, response.text
        return response.json()["items"]


@pytest.fixture
def make_user(api_service) -> Iterator:
    clients: list[httpx.Client] = []

    def make(prefix: str = "user") -> User:
        email = f"{prefix}-{uuid.uuid4().hex[:8]}@example.com"
        with httpx.Client(base_url=api_service.url) as anonymous:
            assert (
                anonymous.post(
                    "/api/v1/auth/register", json={"email": email, "password": PASSWORD}
                ).status_code
                == 201
            )
            token = anonymous.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD}).json()[
                "access_token"
            ]
        client = httpx.Client(base_url=api_service.url, headers={"authorization": f"Bearer {token}"})
        clients.append(client)
        return User(email=email, password=PASSWORD, token=token, api=client)

    yield make
    for client in clients:
        client.close()


@pytest.fixture(scope="module")
def browser():
    """Module-scoped on purpose: Playwright's sync API keeps an event loop running in this
    thread while it is open, which would break asyncio tests that run after it."""
    from playwright.sync_api import sync_playwright

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()
