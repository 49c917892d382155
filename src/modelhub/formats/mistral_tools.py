"""Mistral tool calls (Tekken v11): ``[TOOL_CALLS]name[ARGS]{json}``, one or several
(optionally ``name[CALL_ID]id[ARGS]``, as mistral-common writes past calls).

The parser turns a stream of generated text into OpenAI content and tool-call deltas: the
head of a call (index, id, name) as soon as its name is complete, then argument fragments.
Only what could still become a marker is held back. Output that does not parse as calls
(a bad name, arguments that are not JSON) is returned as plain content, never an error.
"""

from __future__ import annotations

import json
import re
import secrets
import string

from modelhub.errors import InvalidRequestError
from modelhub.formats.base import ContentDelta, OutputDelta, ParsedOutput, ToolCallDelta
from modelhub.formats.grammar import SchemaGrammar
from modelhub.schemas.chat import FunctionCall, ToolCall

__all__ = ["ARGS", "TOOL_CALLS", "MistralToolParser", "forced_call_grammar"]

TOOL_CALLS = "[TOOL_CALLS]"
ARGS = "[ARGS]"
# mistral-common's v11 encoder writes past calls as name[CALL_ID]id[ARGS]; a model may too.
CALL_ID = "[CALL_ID]"
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_ID_CHARS = string.ascii_letters + string.digits


def _new_call_id() -> str:
    # Mistral's own format for call ids: 9 alphanumeric characters.
    return "".join(secrets.choice(_ID_CHARS) for _ in range(9))


def _partial_suffix(text: str, marker: str) -> int:
    """Length of the longest end of ``text`` that begins ``marker``."""
    for k in range(min(len(marker) - 1, len(text)), 0, -1):
        if text.endswith(marker[:k]):
            return k
    return 0


class MistralToolParser:
    def __init__(self, *, tools_enabled: bool, parallel: bool = True):
        self._enabled = tools_enabled
        # parallel_tool_calls=false: the first call is the answer; later ones are dropped.
        self._parallel = parallel
        self._raw: list[str] = []
        self._held = ""  # text not yet emitted: a possible marker, or an unfinished name
        self._mode = "content"  # content -> name -> args -> name -> args ... (-> done)
        self._content: list[str] = []
        self._calls: list[dict] = []
        self._broken = False

    def feed(self, text: str) -> list[OutputDelta]:
        self._raw.append(text)
        if not self._enabled or self._broken:
            return [ContentDelta(text)] if text else []
        self._held += text
        deltas: list[OutputDelta] = []
        progressed = True
        while progressed and not self._broken:
            step = {
                "content": self._content_step,
                "name": self._name_step,
                "args": self._args_step,
                "done": self._done_step,
            }
            emitted, progressed = step[self._mode]()
            deltas.extend(emitted)
        return deltas

    def _take_until_marker(self) -> tuple[str, bool]:
        """Text before the next ``[TOOL_CALLS]`` (and whether one was found); without one,
        all but what could be the start of one."""
        at = self._held.find(TOOL_CALLS)
        if at >= 0:
            piece, self._held = self._held[:at], self._held[at + len(TOOL_CALLS) :]
            return piece, True
        keep = _partial_suffix(self._held, TOOL_CALLS)
        cut = len(self._held) - keep
        piece, self._held = self._held[:cut], self._held[cut:]
        return piece, False

    def _content_step(self) -> tuple[list[OutputDelta], bool]:
        piece, found = self._take_until_marker()
        if found:
            self._mode = "name"
        if piece:
            self._content.append(piece)
        return ([ContentDelta(piece)] if piece else []), found

    def _name_step(self) -> tuple[list[OutputDelta], bool]:
        at = self._held.find(ARGS)
        if at < 0:
            if len(self._held) > 80:  # no name is that long: not a call
                return self._give_up(), False
            return [], False
        name, _, given_id = self._held[:at].strip().partition(CALL_ID)
        if not _NAME.match(name):
            return self._give_up(), False
        self._held = self._held[at + len(ARGS) :]
        call_id = given_id if len(given_id) == 9 and given_id.isalnum() else _new_call_id()
        call = {"id": call_id, "name": name, "arguments": ""}
        self._calls.append(call)
        self._mode = "args"
        return [
            ToolCallDelta(index=len(self._calls) - 1, id=call["id"], name=name, arguments="")
        ], True

    def _give_up(self) -> list[OutputDelta]:
        """Not a call after all: what was held back, marker included, goes out as content
        (a streaming client sees the same text as a non-streaming one)."""
        self._broken = True
        text, self._held = TOOL_CALLS + self._held, ""
        return [ContentDelta(text)]

    def _args_step(self) -> tuple[list[OutputDelta], bool]:
        piece, found = self._take_until_marker()
        if found:
            self._mode = "name" if self._parallel else "done"
        self._calls[-1]["arguments"] += piece
        index = len(self._calls) - 1
        return ([ToolCallDelta(index=index, arguments=piece)] if piece else []), found

    def _done_step(self) -> tuple[list[OutputDelta], bool]:
        self._held = ""
        return [], False

    def finish(self) -> ParsedOutput:
        raw = "".join(self._raw)
        if self._mode == "done":
            self._mode = "args"  # the first call is complete; what followed is dropped
        if not self._enabled or not self._calls or self._broken or self._mode != "args":
            # No calls, or something that only looked like one: it is all content.
            tail = ""
            if self._enabled and not self._broken and not self._calls:
                tail = (TOOL_CALLS if self._mode == "name" else "") + self._held
            return ParsedOutput(deltas=[ContentDelta(tail)] if tail else [], content=raw)
        tail, self._held = self._held, ""
        self._calls[-1]["arguments"] += tail
        try:
            for call in self._calls:
                json.loads(call["arguments"])
        except ValueError:
            return ParsedOutput(content=raw)
        index = len(self._calls) - 1
        return ParsedOutput(
            deltas=[ToolCallDelta(index=index, arguments=tail)] if tail else [],
            content="".join(self._content).strip() or None,
            tool_calls=[
                ToolCall(
                    id=c["id"], function=FunctionCall(name=c["name"], arguments=c["arguments"])
                )
                for c in self._calls
            ],
        )


def forced_call_grammar(
    tools: dict[str, dict], *, parallel: bool, tool_calls_token: int, args_token: int
) -> str:
    """GBNF for ``[TOOL_CALLS]name[ARGS]{args matching name's schema}`` (one or more).

    The markers are matched as the control tokens (llama.cpp's ``<[id]>``), as the model
    was trained to write them: as text, a grammar would also admit them spelled out in
    ordinary tokens (``[T`` ``OO`` ``L``...), which a weak model happily does.
    """
    calls, args = f"<[{tool_calls_token}]>", f"<[{args_token}]>"
    converter = SchemaGrammar()
    alternatives = []
    for i, (name, schema) in enumerate(tools.items()):
        try:
            rule = converter.rule(schema or {"type": "object"}, f"args{i}")
        except Exception as exc:  # the converter raises bare Exceptions and asserts
            raise InvalidRequestError(
                f"Unsupported JSON schema for the parameters of '{name}': {exc}", param="tools"
            ) from exc
        alternatives.append(f'"{name}" {args} {rule}')
    converter._add_rule("call", " | ".join(f"( {a} )" for a in alternatives))
    repeat = f" ( {calls} call )*" if parallel else ""
    converter._add_rule("root", f"{calls} call{repeat}")
    return converter.format_grammar()
