"""A bounded graceful shutdown: on SIGTERM, a stream still open at the drain deadline ends
with an error event, the process exits soon after, and the stream is billed."""

from __future__ import annotations

import json
import signal
import sqlite3
import time

import httpx

from tests.conftest import DEMO_MODEL, LONG_ANSWER
from tests.processes import spawn_modelhub

DRAIN_S = 3


def test_sigterm_ends_a_long_stream_at_the_drain_deadline_and_bills_it(tmp_path):
    server = spawn_modelhub(
        tmp_path, extra_args=["--no-auth"], env={"MODELHUB_DRAIN_TIMEOUT_S": str(DRAIN_S)}
    ).start()
    body = {
        "model": DEMO_MODEL,
        "messages": [{"role": "user", "content": "Write at length."}],
        "stream": True,
        "response_format": LONG_ANSWER,
    }
    events = []
    try:
        with httpx.stream(
            "POST", server.base_url + "/v1/chat/completions", json=body, timeout=60
        ) as response:
            assert response.status_code == 200
            lines = response.iter_lines()
            for line in lines:
                if line.startswith("data: {") and '"content":"' in line and len(events) > 3:
                    break
                events.append(line)
            server.proc.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            events.extend(line for line in lines if line)
        exit_code = server.proc.wait(timeout=DRAIN_S + 30)
        took = time.monotonic() - signalled
    finally:
        server.kill()
    # uvicorn re-raises the signal it handled once it has shut down.
    assert exit_code in (0, -signal.SIGTERM)
    assert took < DRAIN_S + 15, took  # generous on a loaded 2-core machine
    errors = [json.loads(e[6:]) for e in events if e.startswith("data: {") and '"error"' in e]
    assert errors and errors[-1]["error"]["code"] == "server_shutting_down", events[-4:]
    assert events[-1] == "data: [DONE]"
    database = tmp_path / f"data-{server.port}" / "modelhub.db"
    with sqlite3.connect(database) as db:
        rows = db.execute("SELECT status, completion_tokens FROM usage").fetchall()
    assert len(rows) == 1, rows
    assert rows[0][1] > 0, rows
