"""The web service's settings: the shared ones (TODO_ prefix, Dapr's variables) plus where the api is.

``TODO_API_URL`` is used only without a Dapr sidecar (``DAPR_HTTP_PORT`` unset); with one,
the api is reached by service invocation of ``TODO_API_APP_ID`` (``api``).
"""

from __future__ import annotations

from typing import Self

from pydantic import Field, model_validator
from todo_shared.settings import ServiceSettings, is_placeholder


class WebSettings(ServiceSettings):
    service_name: str = "web"
    api_url: str = "http://127.0.0.1:8000"
    api_app_id: str = "api"
    api_timeout_seconds: float = Field(default=10.0, gt=0)
    page_size: int = Field(default=20, ge=1, le=100)

    @model_validator(mode="after")
    def _refuse_weak_secrets(self) -> Self:
        """Overrides the shared check: the web never signs or verifies a JWT (the api does, on
        every call the web forwards), so it needs no TODO_JWT_SIGNING_KEY; Dapr's tokens are
        still refused when they are placeholders outside local/test."""
        if self.is_local:
            return self
        for name, token in (("DAPR_API_TOKEN", self.dapr_api_token), ("APP_API_TOKEN", self.app_api_token)):
            if token is not None and is_placeholder(token.get_secret_value()):
                raise ValueError(f"{name} is a placeholder (environment {self.environment.value})")
        return self
