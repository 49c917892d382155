"""Checks of a chat request against the model card, before anything is loaded or encoded."""

from __future__ import annotations

from modelhub.catalog import ModelCard
from modelhub.errors import InvalidRequestError, UnsupportedParameterError
from modelhub.formats.schema_limits import SchemaLimits, check_schema
from modelhub.schemas.chat import AudioPart, ChatCompletionRequest, ImagePart, NamedToolChoice
from modelhub.settings import Settings

__all__ = ["validate_for_model"]


def _check_parts(request: ChatCompletionRequest, card: ModelCard) -> None:
    for i, message in enumerate(request.messages):
        if isinstance(message.content, str) or message.content is None:
            continue
        for j, part in enumerate(message.content):
            where = f"messages[{i}].content[{j}]"
            if isinstance(part, AudioPart) and not card.accepts("audio"):
                raise InvalidRequestError(
                    f"The model '{card.id}' does not support audio input.", param=where
                )
            if isinstance(part, ImagePart) and not card.accepts("image"):
                raise InvalidRequestError(
                    f"The model '{card.id}' does not support image input; it accepts "
                    f"{', '.join(card.modalities.input)}.",
                    param=where,
                )


def _check_tools(request: ChatCompletionRequest, card: ModelCard) -> None:
    wants_tools = bool(request.tools) and request.tool_choice != "none"
    if wants_tools and not card.features.tool_calling:
        raise UnsupportedParameterError(
            f"The model '{card.id}' does not support tool calling.", param="tools"
        )
    if request.tool_choice is not None and request.tool_choice != "none" and not request.tools:
        raise InvalidRequestError(
            "tool_choice is only allowed when tools are specified.", param="tool_choice"
        )
    if isinstance(request.tool_choice, NamedToolChoice):
        names = {t.function.name for t in request.tools or []}
        if request.tool_choice.function.name not in names:
            raise InvalidRequestError(
                f"tool_choice names the function '{request.tool_choice.function.name}', which is "
                f"not among the tools ({', '.join(sorted(names))}).",
                param="tool_choice",
            )


def validate_for_model(request: ChatCompletionRequest, card: ModelCard, settings: Settings) -> None:
    if request.reasoning_effort is not None and not card.features.reasoning:
        raise UnsupportedParameterError(
            f"The model '{card.id}' does not support reasoning; remove reasoning_effort.",
            param="reasoning_effort",
        )
    if request.stream and not card.features.streaming:
        raise UnsupportedParameterError(
            f"The model '{card.id}' does not support streaming.", param="stream"
        )
    if request.top_logprobs is not None and not request.logprobs:
        raise InvalidRequestError(
            "top_logprobs requires logprobs to be true.", param="top_logprobs"
        )
    _check_parts(request, card)
    _check_tools(request, card)
    check_request_schemas(request, settings)


def check_request_schemas(request: ChatCompletionRequest, settings: Settings) -> None:
    """Every schema of a chat request that becomes a grammar: ``response_format``'s and
    each tool's parameters, which share one size budget (one grammar holds all tools)."""
    limits = SchemaLimits.from_settings(settings)
    response_format = request.response_format
    if response_format is not None and response_format.json_schema is not None:
        check_schema(response_format.json_schema.schema_, "response_format", limits)
    total = 0
    for i, tool in enumerate(request.tools or []):
        param = f"tools[{i}].function.parameters"
        total += check_schema(tool.function.parameters, param, limits)
        if total > limits.max_size:
            raise InvalidRequestError(
                f"The tools' parameter schemas together are larger than this hub's limit of "
                f"{limits.max_size} (about their length in JSON).",
                param=param,
            )
