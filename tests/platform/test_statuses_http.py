"""Each request's status in the ledger, through the real server: a request turned away
(429 rate limited, 503 engine queue full) has a row that bills nothing."""

from __future__ import annotations

import asyncio
import threading

import httpx

from modelhub.platform import Limits
from tests.conftest import DEMO_MODEL, LONG_ANSWER, make_settings
from tests.platform.test_outages_http import _keys, _post, _usage
from tests.servers import start_server
from tests.sse import sse_chunks


def test_rate_limited_and_refused_requests_have_rows_that_bill_nothing(tmp_path):
    settings = make_settings(
        tmp_path, auth=True, engine_slots=1, engine_queue=0, ledger_flush_interval_s=0.05
    )
    keys = asyncio.run(_keys(settings, {"acme": Limits(tpm=2000)}))
    server = start_server(settings)
    try:
        streaming = threading.Event()
        finished = threading.Event()

        def hold_the_only_slot() -> None:
            with httpx.stream(
                "POST",
                f"{server.base_url}/v1/chat/completions",
                json={
                    "model": DEMO_MODEL,
                    "messages": [{"role": "user", "content": "Write an essay."}],
                    "max_tokens": 40,
                    "stream": True,
                    "response_format": LONG_ANSWER,
                },
                headers={"Authorization": f"Bearer {keys['acme']}"},
                timeout=120,
            ) as r:
                for chunk in sse_chunks(r.iter_lines()):
                    if chunk.get("choices"):
                        streaming.set()
            finished.set()

        holder = threading.Thread(target=hold_the_only_slot)
        holder.start()
        assert streaming.wait(120)
        refused = _post(server, keys["acme"])
        holder.join()
        assert finished.is_set()
        served = _post(server, keys["acme"])
        over = _post(server, keys["acme"], max_tokens=3000)  # more than the contract's tpm
        assert (refused.status_code, served.status_code, over.status_code) == (503, 200, 429)
        assert refused.json()["error"]["code"] == "engine_overloaded"

        report = {r["status"]: r for r in _usage(server, keys["acme"], by="status").json()}
        assert {s: r["requests"] for s, r in report.items()} == {
            "ok": 2,
            "refused": 1,
            "rate_limited": 1,
        }
        for status in ("refused", "rate_limited"):
            assert report[status]["total_tokens"] == report[status]["cost"] == 0
        assert report["ok"]["completion_tokens"] == 40 + served.json()["usage"]["completion_tokens"]
    finally:
        server.stop()
