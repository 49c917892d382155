"""Mistral tool calls (Tekken v11): ``[TOOL_CALLS]name[ARGS]{json}``, one or several
(optionally ``name[CALL_ID]id[ARGS]``, as mistral-common writes past calls).

The parser turns a stream of generated text into OpenAI content and tool-call deltas: the
head of a call (index, id, name) as soon as its name is complete, then argument fragments.
Only what could still become a marker is held back. Output that only looked like a call
(a bad name) is returned as plain content, never an error; the markers themselves never
reach content. Arguments are relayed as generated: a call cut off by ``max_tokens``
stays a call, with ``finish_reason: length`` telling the client.
"""

from __future__ import annotations

import re
import secrets
import string

from modelhub.errors import InvalidRequestError
from modelhub.formats.base import ContentDelta, OutputDelta, ToolCallDelta
from modelhub.formats.grammar import SchemaGrammar

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
        self.markers = frozenset((TOOL_CALLS, ARGS, CALL_ID)) if tools_enabled else frozenset()
        # parallel_tool_calls=false: the first call is the answer; later ones are dropped.
        self._parallel = parallel
        self._held = ""  # text not yet emitted: a possible marker, or an unfinished name
        self._mode = "content"  # content -> name -> args -> name -> args ... (-> done)
        self._calls = 0
        self._broken = False

    def feed(self, text: str) -> list[OutputDelta]:
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
        piece = _without_markup(piece)
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
        self._calls += 1
        self._mode = "args"
        return [ToolCallDelta(index=self._calls - 1, id=call_id, name=name, arguments="")], True

    def _give_up(self) -> list[OutputDelta]:
        """Not a call after all: the text held back goes out as content, without the
        markers (a streaming client sees the same text as a non-streaming one)."""
        self._broken = True
        text, self._held = _without_markup(self._held), ""
        return [ContentDelta(text)] if text else []

    def _args_step(self) -> tuple[list[OutputDelta], bool]:
        piece, found = self._take_until_marker()
        if found:
            self._mode = "name" if self._parallel else "done"
        index = self._calls - 1
        return ([ToolCallDelta(index=index, arguments=piece)] if piece else []), found

    def _done_step(self) -> tuple[list[OutputDelta], bool]:
        self._held = ""
        return [], False

    def finish(self) -> list[OutputDelta]:
        """What was held back. A call cut short (``max_tokens``) stays a call with the
        arguments generated so far, as OpenAI returns it with ``finish_reason: length``."""
        held, self._held = self._held, ""
        if not self._enabled or self._broken or not held:
            return []
        if self._mode == "content":
            text = _without_markup(held)
            return [ContentDelta(text)] if text else []
        if self._mode == "args":
            return [ToolCallDelta(index=self._calls - 1, arguments=held)]
        name = held.strip().partition(CALL_ID)[0]
        if self._mode == "name" and _NAME.match(name):
            self._calls += 1
            return [
                ToolCallDelta(index=self._calls - 1, id=_new_call_id(), name=name, arguments="")
            ]
        return []


def _without_markup(text: str) -> str:
    return text.replace(ARGS, "").replace(CALL_ID, "")


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
