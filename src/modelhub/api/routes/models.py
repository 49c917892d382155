"""GET /v1/models and /v1/models/{id}: OpenAI's shape plus the catalog's metadata."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Request

from modelhub.api.deps import authenticate, hub
from modelhub.api.openapi import error_responses
from modelhub.serving.deployment import ServedModel

__all__ = ["describe", "router"]

router = APIRouter(responses=error_responses(401, 403))


def describe(served: ServedModel, now: datetime) -> dict:
    card = served.card
    body = card.model_dump(mode="json", exclude={"backend", "id"})
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


@router.get("/v1/models")
async def list_models(request: Request) -> dict:
    await authenticate(request)
    h = hub(request)
    now = h.deployment.catalog.now()
    return {"object": "list", "data": [describe(s, now) for s in h.deployment]}


@router.get("/v1/models/{model_id:path}", responses=error_responses(404))
async def get_model(model_id: str, request: Request) -> dict:
    await authenticate(request)
    h = hub(request)
    return describe(h.deployment.get(model_id), h.deployment.catalog.now())
