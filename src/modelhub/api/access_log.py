"""The access log and request ids: one line and one metrics update per HTTP request.

Pure ASGI (no ``BaseHTTPMiddleware``: it would buffer streamed responses). A client's
``X-Request-Id`` is kept when it is a sane token, otherwise one is made; it is echoed on
the response. The line carries the path without its query string and no header: API keys
and admin tokens never reach the log.
"""

from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modelhub import access
from modelhub.metrics import Metrics

__all__ = ["AccessLogMiddleware"]

log = logging.getLogger("modelhub.access")

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
# Requests of these endpoints concern a model: they are counted by model and contract.
_MODEL_ENDPOINTS = frozenset({"/v1/chat/completions", "/tokenize"})


def _request_id(scope: Scope) -> str:
    given = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
    return given if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex


class AccessLogMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        entry = access.RequestLog(_request_id(scope), scope["method"], scope["path"])
        status = 500
        header = [(b"x-request-id", entry.request_id.encode())]

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), *header]
            await send(message)

        token = access.begin(entry)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            access.end(token)
            self._finish(scope, entry, status, time.perf_counter() - started)

    def _finish(self, scope: Scope, entry: access.RequestLog, status: int, elapsed: float) -> None:
        route = scope.get("route")
        endpoint = getattr(route, "path", None) or "unmatched"
        model = entry.model or ("" if endpoint in _MODEL_ENDPOINTS else None)
        self.metrics.observe_response(
            endpoint=endpoint,
            status=status,
            model=model,
            contract=entry.contract,
            latency_s=elapsed,
        )
        tokens = (
            "-"
            if entry.prompt_tokens is None
            else f"{entry.prompt_tokens}+{entry.completion_tokens}"
        )
        log.info(
            "%s %s %s %d contract=%s model=%s tokens=%s %.1fms",
            entry.request_id,
            entry.method,
            entry.path,
            status,
            entry.contract or "-",
            entry.model or "-",
            tokens,
            elapsed * 1000,
            extra={
                "request_id": entry.request_id,
                "method": entry.method,
                "path": entry.path,
                "status": status,
                "contract": entry.contract,
                "model": entry.model,
                "prompt_tokens": entry.prompt_tokens,
                "completion_tokens": entry.completion_tokens,
                "latency_ms": round(elapsed * 1000, 1),
            },
        )
