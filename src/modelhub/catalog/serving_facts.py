"""What the backend actually serving a model says about it, so the catalog does not claim
the card's figures for weights it is not running.

A card describes the model as published (Mistral Small: fp8, 128k); the operator may serve
a Q4_K_M GGUF of it with an 8k context, or a vLLM started with ``--max-model-len 32768``.
The GGUF's header gives its file type and trained context (read with ``gguf``, without
loading weights); an upstream's ``/v1/models`` gives vLLM's ``max_model_len``.
"""

from __future__ import annotations

import ctypes
import logging
from dataclasses import dataclass
from pathlib import Path

import httpx
import llama_cpp
from gguf import LlamaFileType

__all__ = ["ServingFacts", "gguf_facts", "upstream_facts"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServingFacts:
    """None: the backend does not say."""

    quantization: str | None = None
    context_window: int | None = None


def gguf_facts(path: Path) -> ServingFacts:
    """Read by llama.cpp's loader, vocabulary only: gguf-py's ``GGUFReader`` parses every
    metadata array in Python, 55 s for the tiny Mistral's 131k-token vocabulary (measured on
    two busy cores), where this takes about 2 s."""
    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    model = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
    if not model:
        log.warning("could not read the GGUF header of %s", path)
        return ServingFacts()
    try:
        file_type = _meta(model, "general.file_type")
        architecture = _meta(model, "general.architecture")
        context = _meta(model, f"{architecture}.context_length") if architecture else None
    finally:
        llama_cpp.llama_model_free(model)
    quantization = None
    if file_type is not None:
        try:
            quantization = LlamaFileType(int(file_type)).name.removeprefix("MOSTLY_")
        except ValueError:
            quantization = f"file type {file_type}"
    return ServingFacts(quantization, int(context) if context is not None else None)


def _meta(model, key: str) -> str | None:
    buf = ctypes.create_string_buffer(256)
    n = llama_cpp.llama_model_meta_val_str(model, key.encode(), buf, len(buf))
    return buf.value.decode() if n >= 0 else None


async def upstream_facts(
    urls: list[str], served_model_name: str, api_key: str | None = None
) -> ServingFacts:
    """The first replica that answers ``/models`` with the model's ``max_model_len``."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    async with httpx.AsyncClient(headers=headers, timeout=5) as client:
        for url in urls:
            try:
                response = await client.get(f"{url.rstrip('/')}/models")
                models = response.json().get("data", [])
            except (httpx.HTTPError, ValueError, AttributeError):
                continue
            for model in models:
                if isinstance(model, dict) and model.get("id") == served_model_name:
                    window = model.get("max_model_len")
                    return ServingFacts(
                        quantization=_text(model.get("quantization")),
                        context_window=window if isinstance(window, int) else None,
                    )
    return ServingFacts()


def _text(value) -> str | None:
    return value if isinstance(value, str) else None
