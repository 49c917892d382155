"""What the app's startup and shutdown do to the process that serves it."""

from __future__ import annotations

import gc

import httpx
from tests.conftest import make_settings
from tests.servers import start_server


def test_startup_freezes_what_it_built_and_shutdown_lets_it_go(tmp_path):
    """Full collections that traversed startup's objects took 120-145 ms, every 2 s at 16
    requests in flight, and stalled them all; frozen, those objects are left out."""
    assert gc.get_freeze_count() == 0
    server = start_server(make_settings(tmp_path, auth=False, gc_freeze=True))
    try:
        assert gc.get_freeze_count() > 0
        assert httpx.get(server.base_url + "/health").status_code == 200
    finally:
        server.stop()
    assert gc.get_freeze_count() == 0
