"""Feed a parser and assemble its deltas the way the renderers fold them."""

from __future__ import annotations

from dataclasses import dataclass, field

from modelhub.formats.base import ContentDelta, OutputDelta, OutputParser, ToolCallDelta

__all__ = ["Parsed", "parse"]


@dataclass
class Parsed:
    deltas: list[OutputDelta]
    content: str = ""
    calls: list[dict] = field(default_factory=list)


def parse(parser: OutputParser, text: str, piece: int = 1) -> Parsed:
    deltas: list[OutputDelta] = []
    for i in range(0, len(text), piece):
        deltas += parser.feed(text[i : i + piece])
    deltas += parser.finish()
    parsed = Parsed(deltas)
    by_index: dict[int, dict] = {}
    for d in deltas:
        if isinstance(d, ContentDelta):
            parsed.content += d.text
        elif isinstance(d, ToolCallDelta):
            call = by_index.setdefault(d.index, {"id": None, "name": "", "arguments": ""})
            call["id"] = call["id"] or d.id
            call["name"] += d.name or ""
            call["arguments"] += d.arguments
    parsed.calls = [by_index[i] for i in sorted(by_index)]
    return parsed
