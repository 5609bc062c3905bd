"""Service settings from the environment (pydantic-settings).

Public API:

- ``ServiceSettings``: the base class every service's settings extend. Our own settings
  use the ``TODO_`` prefix (``TODO_ENVIRONMENT``, ``TODO_JWT_SIGNING_KEY``, ...); Dapr's
  standard variables keep their unprefixed names (``DAPR_HTTP_PORT``, ``DAPR_API_TOKEN``,
  ``APP_API_TOKEN``). Outside ``local``/``test`` a placeholder or short JWT key is refused.
- ``Environment``: ``local | test | staging | production``.
- ``SettingsError``: raised by ``load_settings`` with a readable message that never
  contains a value.
- ``load_settings(cls, **overrides)``: build settings from the environment, turning
  pydantic's ValidationError into ``SettingsError``.
- ``is_placeholder(value)``: whether a secret looks like a placeholder (``change-me``, ...).

A service extends it::

    class ApiSettings(ServiceSettings):
        service_name: str = "api"
        database_url: SecretStr = SecretStr("postgresql://todo@127.0.0.1:5432/todo")
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any, Literal, Self, TypeVar

from pydantic import AliasChoices, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MIN_JWT_KEY_LENGTH = 32

# A key is a placeholder when it contains one of these words (case-insensitive).
PLACEHOLDER_MARKERS = (
    "change-me",
    "changeme",
    "change_me",
    "placeholder",
    "example",
    "replace",
    "insecure",
    "dummy",
    "not-a-secret",
    "notsecret",
    "xxxx",
    "local-only",
)

LOCAL_JWT_KEY = "local-only-insecure-jwt-key-change-me-before-deploying"  # refused outside local/test


class Environment(StrEnum):
    local = "local"
    test = "test"
    staging = "staging"
    production = "production"


class SettingsError(ValueError):
    """Settings cannot be used; the message names the variables, never their values."""


def is_placeholder(value: str) -> bool:
    lowered = value.strip().lower()
    if not lowered or len(set(lowered)) <= 2:
        return True
    return any(marker in lowered for marker in PLACEHOLDER_MARKERS)


def _dapr(*names: str) -> AliasChoices:
    """Dapr's standard variable names, unprefixed; the field name works for keyword arguments."""
    return AliasChoices(*names)


class ServiceSettings(BaseSettings):
    """Settings every Todo service shares. Subclass it and add fields (same TODO_ prefix)."""

    model_config = SettingsConfigDict(
        env_prefix="TODO_",
        extra="ignore",
        populate_by_name=True,
        validate_default=True,
        case_sensitive=False,
        hide_input_in_errors=True,  # never print a secret in an error
    )

    environment: Environment = Environment.local
    service_name: str = "todo"
    version: str = "0.1.0"
    host: str = "0.0.0.0"  # noqa: S104 - containers listen on all interfaces
    port: int = Field(default=8000, ge=1, le=65535)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"

    jwt_signing_key: SecretStr = SecretStr(LOCAL_JWT_KEY)
    jwt_ttl_seconds: int = Field(default=12 * 3600, ge=60, le=30 * 24 * 3600)
    jwt_issuer: str = "todo"

    max_body_bytes: int = Field(default=64 * 1024, ge=1024)
    shutdown_timeout_seconds: float = Field(default=20.0, gt=0)
    readiness_timeout_seconds: float = Field(default=2.0, gt=0)

    # Dapr: the sidecar's HTTP port (None: no sidecar), the token the app sends to the
    # sidecar, and the token the sidecar sends to the app (checked on Dapr-called routes).
    dapr_http_port: int | None = Field(
        default=None, ge=1, le=65535, validation_alias=_dapr("DAPR_HTTP_PORT", "dapr_http_port")
    )
    dapr_host: str = Field(default="127.0.0.1", validation_alias=_dapr("DAPR_HOST", "dapr_host"))
    dapr_api_token: SecretStr | None = Field(
        default=None, validation_alias=_dapr("DAPR_API_TOKEN", "dapr_api_token")
    )
    app_api_token: SecretStr | None = Field(
        default=None, validation_alias=_dapr("APP_API_TOKEN", "app_api_token")
    )

    @property
    def is_local(self) -> bool:
        """local and test runs: relaxed secret rules, no Secure cookie."""
        return self.environment in (Environment.local, Environment.test)

    @model_validator(mode="after")
    def _refuse_weak_secrets(self) -> Self:
        if self.is_local:
            return self
        key = self.jwt_signing_key.get_secret_value()
        if is_placeholder(key):
            raise ValueError(
                f"TODO_JWT_SIGNING_KEY is a placeholder; environment {self.environment.value} "
                f"needs a random key of at least {MIN_JWT_KEY_LENGTH} characters"
            )
        if len(key) < MIN_JWT_KEY_LENGTH:
            raise ValueError(
                f"TODO_JWT_SIGNING_KEY is shorter than {MIN_JWT_KEY_LENGTH} characters "
                f"(environment {self.environment.value})"
            )
        for name, token in (("DAPR_API_TOKEN", self.dapr_api_token), ("APP_API_TOKEN", self.app_api_token)):
            if token is not None and is_placeholder(token.get_secret_value()):
                raise ValueError(f"{name} is a placeholder (environment {self.environment.value})")
        return self


S = TypeVar("S", bound=ServiceSettings)


def _describe(error: dict[str, Any], prefix: str) -> str:
    loc = ".".join(str(part) for part in error.get("loc", ()) if part != "__root__")
    name = f"{prefix}{loc.upper()}" if loc else "settings"
    message = re.sub(r"^Value error, ", "", error.get("msg", "invalid"))
    return f"{name}: {message}"


def load_settings(cls: type[S], **overrides: Any) -> S:
    """Build ``cls`` from the environment (and ``overrides``); SettingsError if invalid.

    The message lists each offending variable and what is wrong, never the value.
    """
    try:
        return cls(**overrides)
    except ValidationError as exc:
        prefix = cls.model_config.get("env_prefix", "")
        lines = [_describe(err, prefix) for err in exc.errors(include_input=False, include_url=False)]
        raise SettingsError("invalid settings:\n  " + "\n  ".join(lines)) from None
