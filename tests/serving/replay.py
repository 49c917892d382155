"""A loopback server that answers each chat request with the next recorded upstream SSE
transcript: the gateway's relay is the thing under test, so a recording will do."""

from __future__ import annotations

import socket
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

__all__ = ["replay_upstream"]


@contextmanager
def replay_upstream(transcripts: list[bytes]) -> Iterator[tuple[str, list[dict]]]:
    """Yields (the /v1 base URL, the request bodies received)."""
    queue = deque(transcripts)
    received: list[dict] = []

    async def chat(request: Request) -> Response:
        received.append(await request.json())
        return Response(queue.popleft(), media_type="text/event-stream")

    async def models(request: Request) -> Response:
        return JSONResponse({"object": "list", "data": []})

    app = Starlette(
        routes=[
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/v1/models", models),
        ]
    )
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1", received
    finally:
        server.should_exit = True
        thread.join(timeout=10)
