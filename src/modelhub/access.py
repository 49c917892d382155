"""The request being served, as the access log will show it.

The access-log middleware opens a ``RequestLog`` per request and puts it in a context
variable; whatever runs for that request (authentication, serving, a streamed body in a
child task, which copies the context) fills in who called, which model and the tokens.
No HTTP types here: serving may import it.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass

__all__ = ["RequestLog", "begin", "current", "end", "note_contract", "note_model", "note_tokens"]


@dataclass
class RequestLog:
    request_id: str
    method: str
    path: str
    contract: str | None = None
    model: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


_current: ContextVar[RequestLog | None] = ContextVar("modelhub_request_log", default=None)


def current() -> RequestLog | None:
    return _current.get()


def begin(entry: RequestLog):
    """Make ``entry`` the current request's (the middleware's call); returns the reset token."""
    return _current.set(entry)


def end(token) -> None:
    _current.reset(token)


def note_model(model: str) -> None:
    entry = _current.get()
    if entry is not None:
        entry.model = model


def note_contract(contract: str) -> None:
    entry = _current.get()
    if entry is not None:
        entry.contract = contract


def note_tokens(prompt_tokens: int, completion_tokens: int) -> None:
    entry = _current.get()
    if entry is not None:
        entry.prompt_tokens = prompt_tokens
        entry.completion_tokens = completion_tokens
