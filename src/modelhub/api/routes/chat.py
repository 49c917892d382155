"""POST /v1/chat/completions: a thin router over ``modelhub.serving.chat``."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from modelhub.api.cancellation import until_disconnect
from modelhub.api.deps import AuthenticatedRoute, authenticate, hub
from modelhub.api.openapi import MODEL_ERRORS
from modelhub.api.sse import EventStreamResponse
from modelhub.schemas.chat import ChatCompletionRequest

__all__ = ["router"]

router = APIRouter(route_class=AuthenticatedRoute, responses=MODEL_ERRORS)


@router.post("/v1/chat/completions")
async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
    # Requests are counted, by status, by the access-log middleware.
    h = hub(request)
    principal = await authenticate(request, body.model)
    prepared = await until_disconnect(request, h.chat.prepare(body, principal))
    if body.stream:
        stream = await until_disconnect(request, h.chat.open_stream(prepared))
        return EventStreamResponse(stream, prepared.headers)
    completion = await until_disconnect(request, h.chat.complete(prepared))
    return Response(
        completion.model_dump_json(), media_type="application/json", headers=prepared.headers
    )
