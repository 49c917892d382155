"""A client that leaves after its stream was opened but before the response's first byte.

The window is too narrow to hit through a socket, so the real app is driven through ASGI
directly: the body arrives, the request runs up to its first event, and the client is gone
when the streamed response starts, which an ASGI 2.4 server reports by raising from
``send`` (Starlette then never asks the body for a chunk). The request must still be
settled: billed as cancelled, nothing left in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3

from starlette.requests import ClientDisconnect
from tests.conftest import DEMO_MODEL, LONG_ANSWER, make_settings

from modelhub.api.app import create_app


async def test_a_stream_whose_client_left_before_the_first_byte_is_settled(tmp_path):
    settings = make_settings(tmp_path, auth=False)
    app = create_app(settings)
    body = json.dumps(
        {
            "model": DEMO_MODEL,
            "messages": [{"role": "user", "content": "Write a long essay."}],
            "max_tokens": 500,
            "stream": True,
            "response_format": LONG_ANSWER,
        }
    ).encode()
    receives = 0
    never = asyncio.Event()

    async def receive() -> dict:
        # 1: the body; then the disconnect listeners while the request is prepared and
        # opened (each cancelled when its step is done).
        nonlocal receives
        receives += 1
        if receives == 1:
            return {"type": "http.request", "body": body, "more_body": False}
        await never.wait()
        raise AssertionError("unreachable")

    async def send(message: dict) -> None:
        raise OSError("the client is gone")

    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/chat/completions",
        "raw_path": b"/v1/chat/completions",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"host", b"hub")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }
    async with app.router.lifespan_context(app):
        with contextlib.suppress(ClientDisconnect, OSError):
            await asyncio.wait_for(app(scope, receive, send), 60)
        assert receives == 3
        platform = app.state.hub.platform
        assert not platform._ledger.in_flight
        await platform.flush()
    with sqlite3.connect(settings.data_dir / "modelhub.db") as db:
        rows = db.execute("SELECT status FROM usage").fetchall()
    assert rows == [("cancelled",)]
