"""Settings from the environment; weak secrets refused outside local/test (rung L0)."""

from __future__ import annotations

import secrets

import pytest
from todo_shared.settings import (
    LOCAL_JWT_KEY,
    Environment,
    ServiceSettings,
    SettingsError,
    is_placeholder,
    load_settings,
)

pytestmark = pytest.mark.unit

STRONG_KEY = secrets.token_urlsafe(32)  # fresh per run: no key-like literal in git


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    import os

    for name in list(os.environ):
        if name.startswith("TODO_") or name in (
            "DAPR_HTTP_PORT",
            "DAPR_API_TOKEN",
            "APP_API_TOKEN",
            "DAPR_HOST",
        ):
            monkeypatch.delenv(name)


def test_defaults_are_for_a_local_run():
    settings = load_settings(ServiceSettings)
    assert settings.environment is Environment.local
    assert settings.is_local
    assert settings.dapr_http_port is None
    assert settings.jwt_signing_key.get_secret_value() == LOCAL_JWT_KEY


def test_our_variables_use_the_todo_prefix_and_dapr_keeps_its_names(monkeypatch):
    monkeypatch.setenv("TODO_ENVIRONMENT", "staging")
    monkeypatch.setenv("TODO_JWT_SIGNING_KEY", STRONG_KEY)
    monkeypatch.setenv("TODO_PORT", "8081")
    monkeypatch.setenv("TODO_MAX_BODY_BYTES", "2048")
    monkeypatch.setenv("DAPR_HTTP_PORT", "3500")
    monkeypatch.setenv("DAPR_API_TOKEN", "a-sidecar-token-from-a-secret-42")
    monkeypatch.setenv("APP_API_TOKEN", "an-app-token-from-a-secret-4242")
    settings = load_settings(ServiceSettings)
    assert settings.environment is Environment.staging
    assert settings.port == 8081
    assert settings.max_body_bytes == 2048
    assert settings.dapr_http_port == 3500
    assert settings.dapr_api_token.get_secret_value() == "a-sidecar-token-from-a-secret-42"
    assert settings.app_api_token.get_secret_value() == "an-app-token-from-a-secret-4242"
    assert not settings.is_local


def test_keywords_work_for_the_dapr_fields_too():
    settings = ServiceSettings(dapr_http_port=3501, environment="test")
    assert settings.dapr_http_port == 3501


@pytest.mark.parametrize("environment", ["staging", "production"])
@pytest.mark.parametrize(
    ("key", "reason"),
    [
        (None, "placeholder"),  # the built-in local key
        ("change-me", "placeholder"),
        ("CHANGEME-CHANGEME-CHANGEME-CHANGEME-1234", "placeholder"),
        ("replace-with-a-real-key-of-forty-characters", "placeholder"),
        ("a" * 40, "placeholder"),
        ("Zx8#kq2Lm9", "shorter than 32"),
    ],
)
def test_a_weak_jwt_key_is_refused_outside_local(monkeypatch, environment, key, reason):
    monkeypatch.setenv("TODO_ENVIRONMENT", environment)
    if key is not None:
        monkeypatch.setenv("TODO_JWT_SIGNING_KEY", key)
    with pytest.raises(SettingsError) as caught:
        load_settings(ServiceSettings)
    message = str(caught.value)
    assert "TODO_JWT_SIGNING_KEY" in message
    assert reason in message
    if key is not None:
        assert key not in message, "the error must not reveal the value"


@pytest.mark.parametrize("environment", ["local", "test"])
def test_local_runs_accept_any_key(monkeypatch, environment):
    monkeypatch.setenv("TODO_ENVIRONMENT", environment)
    monkeypatch.setenv("TODO_JWT_SIGNING_KEY", "short")
    assert load_settings(ServiceSettings).jwt_signing_key.get_secret_value() == "short"


def test_a_strong_key_is_accepted_in_production(monkeypatch):
    monkeypatch.setenv("TODO_ENVIRONMENT", "production")
    monkeypatch.setenv("TODO_JWT_SIGNING_KEY", STRONG_KEY)
    assert load_settings(ServiceSettings).environment is Environment.production


def test_placeholder_dapr_tokens_are_refused_outside_local(monkeypatch):
    monkeypatch.setenv("TODO_ENVIRONMENT", "production")
    monkeypatch.setenv("TODO_JWT_SIGNING_KEY", STRONG_KEY)
    monkeypatch.setenv("DAPR_API_TOKEN", "changeme")
    with pytest.raises(SettingsError, match="DAPR_API_TOKEN is a placeholder"):
        load_settings(ServiceSettings)


def test_errors_name_the_variable_and_never_echo_values(monkeypatch):
    monkeypatch.setenv("TODO_PORT", "not-a-port-secretish")
    with pytest.raises(SettingsError) as caught:
        load_settings(ServiceSettings)
    assert "TODO_PORT" in str(caught.value)
    assert "secretish" not in str(caught.value)


def test_direct_construction_hides_inputs_in_errors():
    weak = secrets.token_hex(6)
    with pytest.raises(ValueError, match="shorter than 32") as caught:
        ServiceSettings(environment="production", jwt_signing_key=weak)
    assert weak not in str(caught.value)


def test_secrets_are_masked_in_repr():
    token = secrets.token_hex(8)
    settings = ServiceSettings(jwt_signing_key=STRONG_KEY, dapr_api_token=token, environment="test")
    assert STRONG_KEY not in repr(settings)
    assert token not in repr(settings)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("change-me", True),
        ("", True),
        ("xxxxxxxx", True),
        pytest.param(STRONG_KEY, False, id="generated-key-False"),
        ("todo-prod-9f8e7d6c5b4a", False),
    ],
)
def test_is_placeholder(value, expected):
    assert is_placeholder(value) is expected
