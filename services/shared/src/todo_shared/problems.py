"""RFC 9457 problem details: every error a service answers is ``application/problem+json``.

Public API:

- ``Problem``: raise it from application code (``raise Problem(409, "Email already
  registered", type_="urn:todo:problem:email-taken")``); any keyword becomes an extension
  member of the body.
- ``ProblemDetails``: the pydantic model of the body (used in the OpenAPI document).
- ``validation_problem({"field": "message", ...})``: a 422 Problem in the same shape as
  request validation errors, for rules checked in code (cross-field rules, PATCH merges).
- ``problem_response(status, detail=..., ...)``: build the response directly (middleware).
- ``install_problem_handlers(app)``: map Problem, HTTPException (404, 405, 401, 413...),
  request validation errors (422, with an ``errors`` member listing each offending field)
  and malformed JSON to problem responses. Unexpected exceptions are turned into a 500
  problem without internals by the service middleware (``todo_shared.app``).
- ``install_problem_openapi(app)``: make the OpenAPI document say so (every operation
  documents ``application/problem+json`` for 4XX/5XX instead of FastAPI's default 422 body).
- ``PROBLEM_JSON``: the media type.

Body members: ``type`` (``about:blank`` or a ``urn:todo:problem:*`` URI), ``title``,
``status``, ``detail``, ``instance`` (the request path), ``request_id`` and, for validation
errors, ``errors``: ``[{"loc": ["body", "title"], "field": "title", "message": ..., "type": ...}]``.
Input values are never echoed back (they may be passwords).
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse

from todo_shared.logs import request_id_var

PROBLEM_JSON = "application/problem+json"
VALIDATION_TYPE = "urn:todo:problem:validation"


class FieldError(BaseModel):
    loc: list[str | int]
    field: str
    message: str
    type: str


class ProblemDetails(BaseModel):
    """RFC 9457 problem details."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"additionalProperties": True})

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    request_id: str | None = None
    errors: list[FieldError] | None = None


class Problem(Exception):
    """An error answered as problem+json. Extra keywords become extension members."""

    def __init__(
        self,
        status: int,
        detail: str | None = None,
        *,
        title: str | None = None,
        type_: str = "about:blank",
        headers: dict[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(detail or title or str(status))
        self.status = status
        self.detail = detail
        self.title = title
        self.type = type_
        self.headers = headers
        self.extensions = extensions


def validation_problem(fields: dict[str, str], *, location: str = "body") -> Problem:
    """A 422 problem naming each offending field (``{"due_at": "required with recurrence"}``)."""
    errors = [
        {"loc": [location, *name.split(".")], "field": name, "message": message, "type": "value_error"}
        for name, message in fields.items()
    ]
    detail = f"The request is invalid: {', '.join(sorted(fields))}."
    return Problem(422, detail, title="Unprocessable Content", type_=VALIDATION_TYPE, errors=errors)


class ProblemResponse(JSONResponse):
    media_type = PROBLEM_JSON


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def problem_body(
    status: int,
    detail: str | None = None,
    *,
    title: str | None = None,
    type_: str = "about:blank",
    instance: str | None = None,
    **extensions: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {"type": type_, "title": title or _phrase(status), "status": status}
    if detail:
        body["detail"] = detail
    if instance:
        body["instance"] = instance
    body["request_id"] = request_id_var.get()
    body.update({k: v for k, v in extensions.items() if v is not None})
    return body


def problem_response(
    status: int,
    detail: str | None = None,
    *,
    title: str | None = None,
    type_: str = "about:blank",
    instance: str | None = None,
    headers: dict[str, str] | None = None,
    **extensions: Any,
) -> ProblemResponse:
    body = problem_body(status, detail, title=title, type_=type_, instance=instance, **extensions)
    return ProblemResponse(jsonable_encoder(body), status_code=status, headers=headers)


def field_errors(errors: Any) -> list[dict[str, Any]]:
    """Pydantic/FastAPI errors as problem ``errors`` members, without the input values."""
    out = []
    for err in errors:
        loc = [part if isinstance(part, int) else str(part) for part in err.get("loc", ())]
        field = (
            ".".join(str(p) for p in loc[1:] if p != "__root__") if len(loc) > 1 else ".".join(map(str, loc))
        )
        message = str(err.get("msg", "invalid"))
        if err.get("type") == "json_invalid":
            reason = (err.get("ctx") or {}).get("error")
            position = f" at character {loc[1]}" if len(loc) > 1 else ""
            message = f"Malformed JSON{position}: {reason}" if reason else f"Malformed JSON{position}"
            loc, field = ["body"], "body"
        out.append({"loc": loc, "field": field, "message": message, "type": str(err.get("type", "invalid"))})
    return out


async def _on_problem(request: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, Problem)
    return problem_response(
        exc.status,
        exc.detail,
        title=exc.title,
        type_=exc.type,
        instance=request.url.path,
        headers=exc.headers,
        **exc.extensions,
    )


_HTTP_DETAILS = {
    404: "No such resource.",
    405: "This method is not allowed on this resource.",
    413: "The request body is too large.",
}


async def _on_http_exception(request: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else None
    if detail == _phrase(exc.status_code):
        detail = None
    detail = detail or _HTTP_DETAILS.get(exc.status_code)
    return problem_response(exc.status_code, detail, instance=request.url.path, headers=exc.headers)


async def _on_validation_error(request: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, RequestValidationError)
    errors = field_errors(exc.errors())
    malformed = any(e["type"] == "json_invalid" for e in errors)
    if malformed:
        detail = "The request body is not valid JSON."
    else:
        fields = ", ".join(sorted({e["field"] or "request" for e in errors}))
        detail = f"The request is invalid: {fields}."
    return problem_response(
        422,
        detail,
        title="Unprocessable Content",
        type_=VALIDATION_TYPE,
        instance=request.url.path,
        errors=errors,
    )


def install_problem_handlers(app: FastAPI) -> None:
    app.add_exception_handler(Problem, _on_problem)
    app.add_exception_handler(StarletteHTTPException, _on_http_exception)
    app.add_exception_handler(RequestValidationError, _on_validation_error)


_PROBLEM_REF = {"$ref": "#/components/schemas/ProblemDetails"}


def _problem_response_doc(description: str) -> dict[str, Any]:
    return {"description": description, "content": {PROBLEM_JSON: {"schema": _PROBLEM_REF}}}


def install_problem_openapi(app: FastAPI) -> None:
    """Document problem+json for every operation's 4XX/5XX (replacing FastAPI's 422 body)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
            servers=app.servers,
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components["ProblemDetails"] = ProblemDetails.model_json_schema(
            ref_template="#/components/schemas/{model}"
        )
        nested = components["ProblemDetails"].pop("$defs", {})
        components.update(nested)
        for path_item in schema.get("paths", {}).values():
            for operation in path_item.values():
                responses = operation.setdefault("responses", {})
                responses.pop("422", None)
                for code, response in list(responses.items()):
                    if code[0] in "45":
                        response["content"] = {PROBLEM_JSON: {"schema": _PROBLEM_REF}}
                responses.setdefault("4XX", _problem_response_doc("Client error (problem details)"))
                responses.setdefault("5XX", _problem_response_doc("Server error (problem details)"))
        components.pop("HTTPValidationError", None)
        components.pop("ValidationError", None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
