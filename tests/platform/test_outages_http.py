"""Redis killed mid-stream and PostgreSQL stopped under load, through the real server.

Never a 500: a limited contract gets 503 + Retry-After while Redis is down, a key the cache
knows keeps working while PostgreSQL is down and an unknown key gets 503 + Retry-After; the
first request after a restart succeeds; and every request served has its row.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time

import httpx

from modelhub.platform import Limits, open_store
from tests.conftest import DEMO_MODEL, LONG_ANSWER, make_settings
from tests.servers import start_server
from tests.sse import DONE, sse_data

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


async def _keys(settings, contracts: dict[str, Limits]) -> dict[str, str]:
    engine, store = await open_store(settings)
    try:
        keys = {}
        for name, limits in contracts.items():
            await store.create_contract(name, limits=limits)
            keys[name], _ = await store.create_key(name)
        return keys
    finally:
        await engine.dispose()


def _post(server, key: str, **body) -> httpx.Response:
    payload = {"model": DEMO_MODEL, "messages": QUESTION, "max_tokens": 2, **body}
    return httpx.post(
        f"{server.base_url}/v1/chat/completions",
        json=payload,
        headers={"Authorization": f"Bearer {key}"},
        timeout=120,
    )


def _usage(server, key: str, **params) -> httpx.Response:
    return httpx.get(
        f"{server.base_url}/v1/usage",
        params=params,
        headers={"Authorization": f"Bearer {key}"},
        timeout=60,
    )


def _assert_unavailable(response: httpx.Response, code: str) -> None:
    assert response.status_code == 503, response.text
    assert int(response.headers["Retry-After"]) > 0
    assert response.json()["error"]["code"] == code


def test_redis_killed_mid_stream(tmp_path, own_redis):
    settings = make_settings(
        tmp_path, auth=True, redis_url=own_redis.url, ledger_flush_interval_s=0.05
    )
    keys = asyncio.run(
        _keys(settings, {"limited": Limits(rpm=1000, tpm=100_000), "free": Limits()})
    )
    server = start_server(settings)
    try:
        chunks, usage, done = 0, None, False
        with httpx.stream(
            "POST",
            f"{server.base_url}/v1/chat/completions",
            json={
                "model": DEMO_MODEL,
                "messages": QUESTION,
                "max_tokens": 60,
                "stream": True,
                "stream_options": {"include_usage": True},
                "response_format": LONG_ANSWER,
            },
            headers={"Authorization": f"Bearer {keys['limited']}"},
            timeout=120,
        ) as r:
            assert r.status_code == 200
            for data in sse_data(r.iter_lines()):
                if data == DONE:
                    done = True
                else:
                    chunk = json.loads(data)
                    usage = chunk.get("usage") or usage
                    if chunk.get("choices") and chunk["choices"][0]["delta"].get("content"):
                        chunks += 1
                        if chunks == 5:
                            own_redis.kill()
        assert done and usage and usage["completion_tokens"] == 60

        down = [_post(server, keys["limited"]) for _ in range(3)]
        for response in down:
            _assert_unavailable(response, "rate_limiter_unavailable")
        assert _post(server, keys["free"]).status_code == 200  # no limits, no Redis needed

        own_redis.start()
        after = _post(server, keys["limited"])
        assert after.status_code == 200, after.text  # the stale pooled connection is retried

        report = {r["status"]: r for r in _usage(server, keys["limited"], by="status").json()}
        assert report["ok"]["requests"] == 2  # the stream's row was written, Redis or not
        assert report["ok"]["completion_tokens"] == 60 + after.json()["usage"]["completion_tokens"]
        assert report["refused"]["requests"] == 3 and report["refused"]["total_tokens"] == 0
    finally:
        server.stop()


def test_postgres_stopped_under_load(tmp_path, postgres):
    settings = make_settings(
        tmp_path,
        auth=True,
        database_url=postgres.create_database("http_outage"),
        auth_cache_ttl_s=0.5,
        ledger_flush_interval_s=0.05,
    )
    keys = asyncio.run(_keys(settings, {"acme": Limits(), "other": Limits()}))
    server = start_server(settings)
    codes: list[int] = []
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            codes.append(_post(server, keys["acme"]).status_code)

    workers = [threading.Thread(target=load) for _ in range(3)]
    try:
        assert _post(server, keys["acme"]).status_code == 200  # now in the key cache
        codes.append(200)
        for worker in workers:
            worker.start()
        time.sleep(1)
        postgres.stop()
        try:
            deadline = time.monotonic() + 5
            unknown = []
            while time.monotonic() < deadline:
                unknown.append(_post(server, keys["other"]))
                time.sleep(0.5)
            _assert_unavailable(_usage(server, keys["acme"]), "database_unavailable")
        finally:
            postgres.start()
        for response in unknown:
            _assert_unavailable(response, "database_unavailable")
        first = _post(server, keys["other"])
        assert first.status_code == 200, first.text
        time.sleep(1)
    finally:
        stop.set()
        for worker in workers:
            if worker.ident is not None:
                worker.join()
        try:
            report = _usage(server, keys["acme"]).json()
        finally:
            server.stop()
    assert set(codes) == {200}, sorted(set(codes))
    (total,) = report
    assert total["requests"] == total["requests_ok"] == len(codes)
