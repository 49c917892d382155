"""A request's life through the real server: refused before its first byte, cut by its
client, limited before any expensive work, capped in what it may ask."""

from __future__ import annotations

import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from tests.api.test_platform_http import new_key
from tests.conftest import DEMO_MODEL, LONG_ANSWER, MISTRAL, make_settings
from tests.polling import poll_until
from tests.servers import start_server

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
LONG = {
    "model": DEMO_MODEL,
    "messages": QUESTION,
    "max_tokens": 2000,
    "response_format": LONG_ANSWER,
}


def _running(http: httpx.Client) -> float:
    found = re.search(
        r'modelhub_engine_running_sequences\{model="google/gemma-3-270m"\} (\S+)',
        http.get("/metrics").text,
    )
    return float(found.group(1))


def _wait_idle(http: httpx.Client, within: float) -> float:
    start = time.monotonic()
    while _running(http) != 0:
        assert time.monotonic() - start < within, "generation went on after the client left"
        time.sleep(0.05)
    return time.monotonic() - start


def _usage_by_status(http: httpx.Client) -> dict[str, dict]:
    rows = http.get("/v1/usage", params={"by": "status"}).json()
    return {row["status"]: row for row in rows}


def _cancelled(http: httpx.Client) -> dict:
    return _usage_by_status(http).get("cancelled", {"requests": 0, "completion_tokens": 0})


@pytest.fixture(scope="module")
def one_slot(tmp_path_factory):
    """One slot, no queue: a second request while one runs is refused."""
    settings = make_settings(
        tmp_path_factory.mktemp("one-slot"),
        auth=False,
        engine_slots=1,
        engine_queue=0,
        max_request_completion_tokens=8_000,
    )
    server = start_server(settings)
    yield server
    server.stop()


def test_a_refused_stream_gets_a_real_503_and_is_billed_nothing(one_slot):
    with httpx.Client(base_url=one_slot.base_url, timeout=60) as http:
        before = _usage_by_status(http).get("refused", {}).get("requests", 0)
        with http.stream("POST", "/v1/chat/completions", json={**LONG, "stream": True}) as r:
            assert r.status_code == 200
            # Keep the iterator: a dropped one is closed, and with it the connection.
            lines = r.iter_lines()
            next(lines)
            refused = http.post(
                "/v1/chat/completions", json={**LONG, "stream": True, "max_tokens": 4}
            )
        assert refused.status_code == 503
        assert refused.headers["retry-after"]
        assert refused.json()["error"]["code"] == "engine_overloaded"
        _wait_idle(http, within=5)
        row = _usage_by_status(http)["refused"]
        assert row["requests"] == before + 1
        assert row["prompt_tokens"] == row["completion_tokens"] == 0


def test_a_non_streamed_request_stops_when_its_client_leaves(one_slot):
    with httpx.Client(base_url=one_slot.base_url, timeout=60) as http:
        # One slot, no queue: wait until the last test's cut stream has left it entirely.
        tiny = {**LONG, "max_tokens": 1}
        free = poll_until(lambda: http.post("/v1/chat/completions", json=tiny).status_code == 200)
        assert free, "the only slot stayed busy"
        # A cut request's row lands once it is settled, a moment after its slot is free:
        # the last test's stream may still be on its way.
        before = poll_until(lambda: _cancelled(http), lambda c: c == _cancelled(http))
        try:
            early = httpx.post(f"{one_slot.base_url}/v1/chat/completions", json=LONG, timeout=2)
        except httpx.ReadTimeout:
            pass  # the client leaves while the server generates
        else:
            pytest.fail(f"answered before the client left: {early.status_code} {early.text[:300]}")
        took = _wait_idle(http, within=5)
        after = poll_until(lambda: _cancelled(http), lambda c: c["requests"] > before["requests"])
        assert after["requests"] == before["requests"] + 1
        generated = after["completion_tokens"] - before["completion_tokens"]
        # Billed what was generated up to the cut, not the 2,000 it asked for.
        assert 0 < generated < 2000, (generated, took)
        # The slot is free again at once.
        r = http.post("/v1/chat/completions", json={**LONG, "max_tokens": 4})
        assert r.status_code == 200, r.text


def test_n_times_max_tokens_is_capped(one_slot):
    r = httpx.post(
        f"{one_slot.base_url}/v1/chat/completions",
        json={"model": DEMO_MODEL, "messages": QUESTION, "n": 4, "max_tokens": 3_000},
        timeout=30,
    )
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "max_tokens"


class _CountingImages(BaseHTTPRequestHandler):
    fetched = 0
    png = b""

    def do_GET(self):
        type(self).fetched += 1
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(self.png)))
        self.end_headers()
        self.wfile.write(self.png)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def image_server():
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (10, 200, 10)).save(buf, format="PNG")
    _CountingImages.png = buf.getvalue()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _CountingImages)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/cat.png"
    server.shutdown()


@pytest.fixture(scope="module")
def limited(tmp_path_factory, tiny_mistral):
    tmp = tmp_path_factory.mktemp("limited")
    gguf, mmproj, tekken = tiny_mistral
    backends = {MISTRAL: {"gguf": str(gguf), "mmproj": str(mmproj), "tokenizer": str(tekken)}}
    settings = make_settings(
        tmp,
        auth=True,
        backends=backends,
        image_fetch_allow_hosts=["127.0.0.1"],
    )
    server = start_server(settings, on_first_key=lambda key: None)
    yield server, settings.data_dir
    server.stop()


def test_a_contract_past_its_limit_is_refused_before_its_images_are_fetched(limited, image_server):
    server, data_dir = limited
    key = new_key(data_dir, "frugal", "--rpm", "1")
    content = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": image_server}},
    ]
    body = {"model": MISTRAL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=server.base_url, headers=headers, timeout=60) as http:
        assert http.post("/v1/chat/completions", json=body).status_code == 200
        fetched = _CountingImages.fetched
        image_body = {**body, "messages": [{"role": "user", "content": content}]}
        r = http.post("/v1/chat/completions", json=image_body)
        assert r.status_code == 429, r.text
        assert _CountingImages.fetched == fetched


def test_tokenize_is_metered_like_chat(limited):
    server, data_dir = limited
    key = new_key(data_dir, "counter", "--rpm", "2")
    body = {"model": DEMO_MODEL, "messages": QUESTION}
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=server.base_url, headers=headers, timeout=60) as http:
        statuses = [http.post("/tokenize", json=body).status_code for _ in range(3)]
        assert statuses == [200, 200, 429]
        metrics = http.get("/metrics").text
        assert 'modelhub_http_responses_total{endpoint="/tokenize",status="429"}' in metrics
