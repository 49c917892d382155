"""Exact prompt token counts without generating: for ``POST /tokenize`` and the CLI."""

from __future__ import annotations

import anyio

from modelhub.media import load_images
from modelhub.schemas.chat import ChatCompletionRequest
from modelhub.serving.deployment import Deployment
from modelhub.serving.validation import validate_for_model
from modelhub.settings import Settings

__all__ = ["count_prompt"]


async def count_prompt(
    deployment: Deployment, settings: Settings, request: ChatCompletionRequest
) -> dict:
    served = deployment.get(request.model)
    validate_for_model(request, served.card, settings)
    chat_format = served.require_format()
    images = await load_images(request, settings)
    prompt = await anyio.to_thread.run_sync(chat_format.encode, request, images)
    return {
        "prompt_tokens": prompt.prompt_tokens,
        "image_tokens": prompt.image_tokens,
        "max_model_len": served.max_context,
        # vLLM's /tokenize answers with these two; clients written for it keep working.
        "count": prompt.prompt_tokens,
        "tokens": prompt.token_ids,
    }
