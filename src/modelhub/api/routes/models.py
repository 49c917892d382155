"""GET /v1/models and /v1/models/{id}: OpenAI's shape plus the catalog's metadata."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Request

from modelhub.api.deps import authenticate, hub
from modelhub.api.openapi import error_responses
from modelhub.platform.keys import ADMIN_TOKEN_PREFIX
from modelhub.serving.deployment import ServedModel

__all__ = ["describe", "router"]

router = APIRouter(responses=error_responses(401, 403))


def describe(served: ServedModel, now: datetime) -> dict:
    """The card, with what the serving backend says in place of the card's published
    quantization and context (a Q4_K_M GGUF of an fp8 model is served as Q4_K_M)."""
    card = served.card
    body = card.model_dump(mode="json", exclude={"backend", "id"})
    body["technology"]["context_window"] = served.max_context
    if served.facts.quantization:
        body["technology"]["quantization"] = served.facts.quantization
    return {
        "id": card.id,
        "object": "model",
        "created": int(card.lifecycle.launch_at.timestamp()),
        "owned_by": card.owned_by,
        **body,
        "max_model_len": served.max_context,
        "lifecycle": {**body["lifecycle"], "status": card.lifecycle.stage(now)},
        "endpoints": {**body["endpoints"], "supported": card.endpoints.supported()},
        "availability": {
            "available": served.backend is not None,
            "engine": served.backend.name if served.backend is not None else None,
        },
    }


async def _authenticate_reader(request: Request) -> None:
    """A tenant's key, or an admin token: the console's Models page shows admins the catalog."""
    authorization = request.headers.get("authorization") or ""
    if authorization.partition(" ")[2].strip().startswith(ADMIN_TOKEN_PREFIX):
        await hub(request).management.authorize(authorization)
    else:
        await authenticate(request)


@router.get("/v1/models")
async def list_models(request: Request) -> dict:
    await _authenticate_reader(request)
    h = hub(request)
    now = h.deployment.catalog.now()
    return {"object": "list", "data": [describe(s, now) for s in h.deployment]}


@router.get("/v1/models/{model_id:path}", responses=error_responses(404))
async def get_model(model_id: str, request: Request) -> dict:
    await _authenticate_reader(request)
    h = hub(request)
    return describe(h.deployment.get(model_id), h.deployment.catalog.now())
