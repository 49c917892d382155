"""POST /v1/chat/completions: a thin router over ``modelhub.serving.chat``."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse

from modelhub.api.deps import AuthenticatedRoute, authenticate, hub
from modelhub.api.openapi import MODEL_ERRORS
from modelhub.api.sse import sse_events
from modelhub.errors import ModelhubError
from modelhub.schemas.chat import ChatCompletionRequest

__all__ = ["router"]

router = APIRouter(route_class=AuthenticatedRoute, responses=MODEL_ERRORS)


@router.post("/v1/chat/completions")
async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
    h = hub(request)
    # Caller-chosen label values would let anyone grow /metrics (or break it: a lone
    # surrogate cannot be encoded); names outside the catalog are counted as "unknown".
    known = any(card.id == body.model for card in h.deployment.catalog)
    requests = h.metrics.requests
    model = body.model if known else "unknown"
    try:
        principal = await authenticate(request, body.model)
        prepared = await h.chat.prepare(body, principal)
        await h.chat.admit(prepared)
    except ModelhubError as exc:
        requests.labels(model, str(exc.status_code)).inc()
        raise
    if body.stream:
        requests.labels(model, "200").inc()
        return StreamingResponse(
            sse_events(h.chat.stream(prepared)),
            media_type="text/event-stream",
            headers={**prepared.headers, "Cache-Control": "no-cache"},
        )
    try:
        completion = await h.chat.complete(prepared)
    except ModelhubError as exc:
        requests.labels(model, str(exc.status_code)).inc()
        raise
    requests.labels(model, "200").inc()
    return Response(
        completion.model_dump_json(), media_type="application/json", headers=prepared.headers
    )
