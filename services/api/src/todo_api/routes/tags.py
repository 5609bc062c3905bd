"""The user's tags with the number of tasks carrying each (most used first)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from todo_shared.auth import UserId

from todo_api.routes.deps import json_response, store_of
from todo_api.schemas import TagList

router = APIRouter(prefix="/api/v1/tags", tags=["tags"])


@router.get("", response_model=TagList)
async def list_tags(user_id: UserId, request: Request) -> Response:
    counts = await store_of(request).tag_counts(user_id)
    return json_response({"items": [{"name": name, "count": count} for name, count in counts]})
