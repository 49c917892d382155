"""Real modelhub servers on loopback ports, run in a thread of the test process."""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import uvicorn

from modelhub.api.app import create_app
from modelhub.api.server import DrainingServer, server_config
from modelhub.settings import Settings

__all__ = ["MovableClock", "RunningServer", "serve_in_thread", "start_server"]


class MovableClock:
    """The catalog's clock, moved by lifecycle tests."""

    def __init__(self, now: datetime | None = None):
        self.now = now or datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


@dataclass
class RunningServer:
    base_url: str
    settings: Settings
    server: uvicorn.Server
    thread: threading.Thread

    @property
    def api_url(self) -> str:
        return self.base_url + "/v1"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=60)


def serve_in_thread(
    app, server: uvicorn.Server | None = None
) -> tuple[str, uvicorn.Server, threading.Thread]:
    """Any ASGI app on a free loopback port, in a daemon thread; returns once it listens.
    ``server``: a configured one (the hub's own), else plain uvicorn."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = server or uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the test server failed to start (see the log above)")
        if time.monotonic() > deadline:
            raise TimeoutError("the test server did not start within 120 s")
        time.sleep(0.05)
    return f"http://127.0.0.1:{port}", server, thread


def start_server(
    settings: Settings, *, clock: MovableClock | None = None, **app_kwargs
) -> RunningServer:
    app = create_app(settings, clock=clock, **app_kwargs)
    # The hub's own server and limits (header timeout and size, drain), as `modelhub serve`.
    config = server_config(app, settings, log_level="warning", lifespan="on")
    hub = DrainingServer(config, app.state.drain, settings.drain_timeout_s)
    base_url, server, thread = serve_in_thread(app, hub)
    return RunningServer(base_url, settings, server, thread)
