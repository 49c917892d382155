"""The HTTP server's own limits: how long and how large a request head may be, and how
long a shutdown may wait for the requests in flight.

uvicorn's httptools protocol closes nothing while a request head is incomplete: the issue's
adversarial pass held 500 half-open connections that had sent a few bytes each, and
httptools enforces no size on the head. ``BoundedHttpToolsProtocol`` closes a connection
whose head is not complete ``header_read_timeout_s`` after its first byte (or after the
connection opened, for one that sends nothing), and refuses a head over
``max_header_bytes`` with a 431; its refusals are OpenAI-shaped like the app's.

On SIGTERM uvicorn waited for every stream to end (more than 4 minutes for one long
stream). ``DrainingServer`` gives requests ``drain_timeout_s``, then ``Drain`` ends those
still open: a stream gets an error event and ``[DONE]``, a request whose response has not
started gets a 503. Ending a request cancels it, so serving's shielded ``finally`` bills
what it delivered. uvicorn's own cancellation a few seconds later is the backstop.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Iterator
from contextlib import contextmanager
from http import HTTPStatus

import anyio
import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from modelhub.api.errors import error_response
from modelhub.errors import InvalidRequestError, ModelhubError, ServiceUnavailableError
from modelhub.settings import Settings

__all__ = [
    "BoundedHttpToolsProtocol",
    "Drain",
    "DrainMiddleware",
    "DrainingServer",
    "server_config",
]

# How long after the drain deadline uvicorn cancels what is still running.
_BACKSTOP_S = 5.0


class _HeadTooLarge(Exception):
    pass


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline and a size limit on each request head."""

    def __init__(self, *args, header_read_timeout_s: float, max_header_bytes: int, **kwargs):
        super().__init__(*args, **kwargs)
        self._head_timeout_s = header_read_timeout_s
        self._max_head_bytes = max_header_bytes
        self._head_bytes = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_too_large = False

    def _arm_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self._head_timeout_s, self._head_timed_out)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            self._refuse(
                408,
                InvalidRequestError(
                    f"The request head was not complete within {self._head_timeout_s:g} s.",
                    code="request_timeout",
                ),
            )

    def _count_head(self, size: int) -> None:
        self._head_bytes += size
        if self._head_bytes > self._max_head_bytes:
            self._head_too_large = True
            raise _HeadTooLarge  # httptools stops parsing; data_received answers

    def _refuse(self, status: int, error: ModelhubError) -> None:
        body = json.dumps(error.to_body(), ensure_ascii=True).encode()
        head = (
            f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
        )
        self.transport.write(head.encode() + body)
        self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()  # a connection that never sends a byte is closed too

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_bytes = 0
        self._arm_head_timer()

    def on_url(self, url: bytes) -> None:
        self._count_head(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_head(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._disarm_head_timer()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # Idle between requests is the keep-alive timeout's business, not the head's.
        self._disarm_head_timer()

    def send_400_response(self, msg: str) -> None:
        self._disarm_head_timer()
        if self._head_too_large:
            error = InvalidRequestError(
                f"The request head (URL and headers) is larger than this hub's limit of "
                f"{self._max_head_bytes} bytes.",
                code="request_header_too_large",
            )
            self._refuse(431, error)
        else:
            self._refuse(400, InvalidRequestError(msg, code="invalid_http"))


class Drain:
    """The requests in flight, which a shutdown may end at its deadline."""

    def __init__(self) -> None:
        self._scopes: set[anyio.CancelScope] = set()

    @contextmanager
    def request(self) -> Iterator[anyio.CancelScope]:
        """A scope for one request, cancelled by ``end_all``."""
        with anyio.CancelScope() as scope:
            self._scopes.add(scope)
            try:
                yield scope
            finally:
                self._scopes.discard(scope)

    def end_all(self) -> None:
        for scope in list(self._scopes):
            scope.cancel()


class DrainMiddleware:
    """Runs each request so that ``Drain.end_all`` can end it, and tells the client why."""

    def __init__(self, app: ASGIApp, drain: Drain) -> None:
        self.app = app
        self.drain = drain

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        content_type: bytes | None = None  # of the response, once started
        finished = False

        async def tracked(message: Message) -> None:
            nonlocal content_type, finished
            if message["type"] == "http.response.start":
                content_type = dict(message.get("headers", [])).get(b"content-type", b"")
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                finished = True
            await send(message)

        with self.drain.request() as cancel_scope:
            await self.app(scope, receive, tracked)
        if not cancel_scope.cancelled_caught or finished:
            return
        error = ServiceUnavailableError(
            "The server is shutting down; the request was ended at its drain deadline.",
            code="server_shutting_down",
        )
        if content_type is None:
            await error_response(error)(scope, receive, send)
        elif content_type.startswith(b"text/event-stream"):
            event = b"data: " + json.dumps(error.to_body()).encode() + b"\n\ndata: [DONE]\n\n"
            await send({"type": "http.response.body", "body": event, "more_body": False})
        else:
            await send({"type": "http.response.body", "body": b"", "more_body": False})


class DrainingServer(uvicorn.Server):
    """uvicorn's server, whose shutdown ends what is still running at the drain deadline."""

    def __init__(self, config: uvicorn.Config, drain: Drain, drain_timeout_s: float) -> None:
        super().__init__(config)
        self._drain = drain
        self._drain_timeout_s = drain_timeout_s

    async def shutdown(self, sockets=None) -> None:
        deadline = asyncio.get_running_loop().call_later(self._drain_timeout_s, self._drain.end_all)
        try:
            await super().shutdown(sockets)
        finally:
            deadline.cancel()


def server_config(app, settings: Settings, **overrides) -> uvicorn.Config:
    """uvicorn's configuration with the hub's limits (``overrides``: e.g. ``log_level``)."""
    protocol = functools.partial(
        BoundedHttpToolsProtocol,
        header_read_timeout_s=settings.header_read_timeout_s,
        max_header_bytes=settings.max_header_bytes,
    )
    options = {
        "host": settings.host,
        "port": settings.port,
        "log_level": settings.log_level,
        "loop": "uvloop",
        "access_log": False,
        **overrides,
    }
    return uvicorn.Config(
        app,
        http=protocol,
        timeout_graceful_shutdown=settings.drain_timeout_s + _BACKSTOP_S,
        **options,
    )
