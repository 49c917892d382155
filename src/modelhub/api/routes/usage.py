"""GET /v1/usage: a contract reads its own usage (the filters of ``modelhub usage``)."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Request, Response
from pydantic import ValidationError

from modelhub.api.deps import authenticate, hub
from modelhub.api.openapi import error_responses
from modelhub.errors import InvalidRequestError
from modelhub.platform import UsageQuery, render_usage

__all__ = ["router"]

router = APIRouter(responses=error_responses(400, 401, 403))

_MEDIA_TYPES = {"json": "application/json", "csv": "text/csv", "table": "text/plain"}


@router.get("/v1/usage")
async def usage(
    request: Request,
    since: datetime | None = None,
    until: datetime | None = None,
    by: str | None = None,
    format: str = "json",
) -> Response:
    principal = await authenticate(request)
    try:
        query = UsageQuery(since=since, until=until, by=by, format=format)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise InvalidRequestError(
            f"Invalid usage query: {first['msg']}", param=str(first["loc"][0])
        ) from None
    rows = await hub(request).platform.usage(principal, query.since, query.until, query.by)
    return Response(
        render_usage(rows, query.format, query.by), media_type=_MEDIA_TYPES[query.format]
    )
