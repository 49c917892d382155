"""POST /tokenize: vLLM's request shape (model, messages, tools), exact counts back."""

from __future__ import annotations

from fastapi import APIRouter, Request

from modelhub.api.cancellation import until_disconnect
from modelhub.api.deps import AuthenticatedRoute, authenticate, hub
from modelhub.api.openapi import MODEL_ERRORS
from modelhub.schemas.chat import ChatCompletionRequest

__all__ = ["router"]

router = APIRouter(route_class=AuthenticatedRoute, responses=MODEL_ERRORS)


@router.post("/tokenize")
async def tokenize(body: ChatCompletionRequest, request: Request) -> dict:
    principal = await authenticate(request, body.model)
    return await until_disconnect(request, hub(request).chat.tokenize(body, principal))
