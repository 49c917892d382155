"""A gateway in front of three real modelhub engine processes (the upstream path)."""

from __future__ import annotations

import re
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from tests.conftest import DEMO_MODEL, make_settings
from tests.polling import poll_until
from tests.processes import spawn_modelhub
from tests.servers import start_server
from tests.sse import sse_chunks

PUBLIC = "meta-llama/Llama-3.3-70B-Instruct"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def replicas(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("replicas")
    servers = [spawn_modelhub(tmp, extra_args=["--no-auth"]).start(wait=False) for _ in range(3)]
    try:
        for s in servers:
            s.wait_ready()
        yield servers
    finally:
        for s in servers:
            s.stop()


@pytest.fixture(scope="module")
def gateway(replicas, tmp_path_factory):
    backends = {
        PUBLIC: {
            "upstreams": [f"{r.base_url}/v1" for r in replicas],
            "served_model_name": DEMO_MODEL,
        }
    }
    settings = make_settings(
        tmp_path_factory.mktemp("gateway"),
        auth=False,
        backends=backends,
        upstream_health_interval_s=0.3,
        upstream_read_timeout_s=30,
    )
    server = start_server(settings)
    yield server
    server.stop()


def _served_by(replica) -> float:
    text = httpx.get(f"{replica.base_url}/metrics").text
    # Chat responses only: the gateway also asks each replica's /tokenize.
    m = re.search(
        r'modelhub_http_responses_total\{endpoint="/v1/chat/completions",status="200"\} (\S+)',
        text,
    )
    return float(m.group(1)) if m else 0.0


def _gateway_metric(gateway, name: str) -> float:
    text = httpx.get(f"{gateway.base_url}/metrics").text
    m = re.search(rf'{name}\{{model="{re.escape(PUBLIC)}"\}} (\S+)', text)
    return float(m.group(1)) if m else 0.0


def _stream(base_url: str, body: dict, on_content=None) -> dict:
    """Stream one request; return its usage, content and whether an error event came."""
    result = {"content": "", "usage": None, "error": None, "started": False}
    with (
        httpx.Client(timeout=60) as http,
        http.stream("POST", f"{base_url}/v1/chat/completions", json=body) as r,
    ):
        if r.status_code != 200:
            r.read()
            result["error"] = r.json()["error"]
            return result
        for chunk in sse_chunks(r.iter_lines()):
            if "error" in chunk:
                result["error"] = chunk["error"]
                continue
            if chunk.get("usage"):
                result["usage"] = chunk["usage"]
            for choice in chunk["choices"]:
                if choice["delta"].get("content"):
                    result["started"] = True
                    result["content"] += choice["delta"]["content"]
                    if on_content:
                        on_content()
    return result


def _ledger_totals(gateway) -> tuple[int, int]:
    rows = httpx.get(f"{gateway.base_url}/v1/usage").json()
    return sum(r["prompt_tokens"] for r in rows), sum(r["completion_tokens"] for r in rows)


def test_requests_spread_across_replicas_with_exact_upstream_usage(gateway, replicas):
    before = [_served_by(r) for r in replicas]
    ledger_before = _ledger_totals(gateway)
    body = {
        "model": PUBLIC,
        "messages": QUESTION,
        "max_tokens": 6,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda _: _stream(gateway.base_url, body), range(18)))
    assert all(r["error"] is None and r["usage"] for r in results), results
    served = [_served_by(r) - b for r, b in zip(replicas, before)]
    assert sum(served) == 18
    assert all(n >= 1 for n in served), served
    # The gateway counted the prompt with the upstream's own /tokenize: no mismatch.
    direct = httpx.post(
        f"{replicas[0].base_url}/v1/chat/completions",
        json={"model": DEMO_MODEL, "messages": QUESTION, "max_tokens": 1},
    ).json()
    assert {r["usage"]["prompt_tokens"] for r in results} == {direct["usage"]["prompt_tokens"]}
    assert _gateway_metric(gateway, "modelhub_upstream_prompt_token_mismatch_total") == 0
    # The ledger bills exactly what the upstream streams reported.
    expected = (
        sum(r["usage"]["prompt_tokens"] for r in results),
        sum(r["usage"]["completion_tokens"] for r in results),
    )
    after = poll_until(
        lambda: _ledger_totals(gateway),
        lambda now: (now[0] - ledger_before[0], now[1] - ledger_before[1]) == expected,
        interval=0.1,
    )
    assert (after[0] - ledger_before[0], after[1] - ledger_before[1]) == expected


def test_non_streaming_through_the_gateway_uses_public_name(gateway):
    r = httpx.post(
        f"{gateway.base_url}/v1/chat/completions",
        json={"model": PUBLIC, "messages": QUESTION, "max_tokens": 8},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == PUBLIC and body["id"].startswith("chatcmpl-")
    assert body["usage"]["completion_tokens"] >= 1


def test_killed_replica_fails_only_started_streams_and_comes_back(gateway, replicas):
    victim = replicas[1]
    body = {
        "model": PUBLIC,
        "messages": QUESTION,
        "max_tokens": 48,
        "stream": True,
        "temperature": 1.0,
    }
    killed_at: list[float] = []
    outcomes = []

    def one(i: int):
        started_before_kill = threading.Event()

        def mark():
            if not killed_at:
                started_before_kill.set()

        result = _stream(gateway.base_url, body, on_content=mark)
        outcomes.append((result, started_before_kill.is_set()))

    with ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(one, i) for i in range(30)]
        time.sleep(1.5)
        victim.kill()
        killed_at.append(time.monotonic())
        for f in futures:
            f.result()
    failed = [(r, started) for r, started in outcomes if r["error"] is not None]
    # Only streams that already carried content when the replica died may fail.
    assert all(started for _, started in failed), failed
    assert len(outcomes) - len(failed) >= 24
    poll_until(
        lambda: _gateway_metric(gateway, "modelhub_engine_healthy_replicas"),
        lambda healthy: healthy == 2,
        interval=0.1,
    )
    assert _gateway_metric(gateway, "modelhub_engine_healthy_replicas") == 2
    victim.start()
    poll_until(
        lambda: _gateway_metric(gateway, "modelhub_engine_healthy_replicas"),
        lambda healthy: healthy == 3,
        timeout=20,
        interval=0.1,
    )
    assert _gateway_metric(gateway, "modelhub_engine_healthy_replicas") == 3
    before = _served_by(victim)
    with ThreadPoolExecutor(6) as pool:
        list(pool.map(lambda _: _stream(gateway.base_url, {**body, "max_tokens": 4}), range(12)))
    assert _served_by(victim) > before


@pytest.fixture
def stalling_upstream():
    """Accepts connections and never answers: the gateway's timeout is what is tested."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    held = []
    stop = threading.Event()

    def accept():
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
                held.append(conn)
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    sock.close()


def test_stalled_upstream_is_a_clear_504(stalling_upstream, tmp_path):
    settings = make_settings(
        tmp_path,
        auth=False,
        backends={PUBLIC: {"upstreams": [stalling_upstream], "served_model_name": "x"}},
        upstream_read_timeout_s=1.0,
        upstream_health_interval_s=30,
    )
    server = start_server(settings)
    try:
        started = time.monotonic()
        r = httpx.post(
            f"{server.base_url}/v1/chat/completions",
            json={"model": PUBLIC, "messages": QUESTION, "max_tokens": 4},
            timeout=30,
        )
        assert r.status_code == 504, r.text
        assert r.json()["error"]["code"] == "upstream_timeout"
        assert "did not answer in time" in r.json()["error"]["message"]
        assert time.monotonic() - started < 10
    finally:
        server.stop()
