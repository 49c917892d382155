"""OpenAI endpoints no catalog model offers yet: answer naming the model and what it does
support, instead of a bare 404."""

from __future__ import annotations

import json

from fastapi import APIRouter, Request

from modelhub.api.deps import AuthenticatedRoute, authenticate, hub
from modelhub.errors import EndpointNotSupportedError, InvalidRequestError

__all__ = ["router"]

router = APIRouter(route_class=AuthenticatedRoute)

_ENDPOINTS = {
    "/v1/embeddings": "embeddings",
    "/v1/images/generations": "image generation",
    "/v1/audio/transcriptions": "audio transcription",
    "/v1/audio/translations": "audio translation",
    "/v1/audio/speech": "speech synthesis",
}


async def _model_of(request: Request) -> str:
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        form = await request.form()
        model = form.get("model")
    else:
        try:
            model = json.loads(await request.body() or b"{}").get("model")
        except (ValueError, AttributeError):
            raise InvalidRequestError(
                "The request body is not a JSON object.", code="invalid_json"
            ) from None
    if not isinstance(model, str):
        raise InvalidRequestError("Missing required parameter: 'model'.", param="model")
    return model


async def _refuse(request: Request) -> None:
    model = await _model_of(request)
    await authenticate(request, model)
    card = hub(request).deployment.get(model).card
    what = _ENDPOINTS[request.url.path]
    supported = ", ".join(card.endpoints.supported())
    raise EndpointNotSupportedError(
        f"The model '{model}' does not support {what} ({request.url.path}). "
        f"It supports: {supported}.",
        param="model",
    )


for _path in _ENDPOINTS:
    router.add_api_route(_path, _refuse, methods=["POST"], include_in_schema=False)
