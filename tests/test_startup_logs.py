"""What ``modelhub serve`` says as it starts and serves: a separate process, its log."""

from __future__ import annotations

import json
import re

import httpx
import pytest

from tests.conftest import DEMO_MODEL
from tests.processes import spawn_modelhub

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
# A process imports everything and loads the demo model: minutes on a busy 2-core machine.
_START_S = 400


def _chat(base_url: str, key: str | None, **headers) -> httpx.Response:
    auth = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(
        f"{base_url}/v1/chat/completions",
        json={"model": DEMO_MODEL, "messages": QUESTION, "max_tokens": 3},
        headers={**auth, **headers},
        timeout=120,
    )


@pytest.fixture(scope="module")
def text_server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("logs-text")
    server = spawn_modelhub(tmp, env={"MODELHUB_LOG_LEVEL": "info"}).start(wait=False)
    server.wait_ready(timeout=_START_S)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def json_server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("logs-json")
    server = spawn_modelhub(
        tmp,
        extra_args=["--no-auth"],
        env={"MODELHUB_LOG_LEVEL": "info", "MODELHUB_LOG_FORMAT": "json"},
    ).start(wait=False)
    server.wait_ready(timeout=_START_S)
    yield server
    server.stop()


def _first_key(log: str) -> str:
    return re.search(r"^\s+(mh-\S+)$", log, re.MULTILINE).group(1)


def test_banner_shows_the_real_address_and_each_model_its_load_time(text_server):
    log = text_server.log.read_text()
    assert f"on http://127.0.0.1:{text_server.port} (database: sqlite" in log
    assert f"http://127.0.0.1:{text_server.port}/v1/models" in log  # the first key's hint
    assert "127.0.0.1:8000" not in log
    loaded = re.search(rf"model {DEMO_MODEL}: served by llama.cpp .* loaded in (\d+\.\d) s", log)
    assert loaded, log
    assert "authentication is OFF" not in log


def test_access_log_with_request_ids_and_no_secrets(text_server):
    key = _first_key(text_server.log.read_text())
    given = _chat(text_server.base_url, key, **{"X-Request-Id": "trace-42"})
    assert given.status_code == 200 and given.headers["x-request-id"] == "trace-42"
    made = _chat(text_server.base_url, "mh-wrongwrongwrongwrong")
    assert made.status_code == 401 and re.fullmatch(r"[0-9a-f]{32}", made.headers["x-request-id"])
    hostile = _chat(text_server.base_url, key, **{"X-Request-Id": "x" * 500})
    assert len(hostile.headers["x-request-id"]) == 32  # not echoed: too long
    httpx.get(
        f"{text_server.base_url}/v1/models?api_key={key}",
        headers={"Authorization": f"Bearer {key}"},
    )
    lines = text_server.log.read_text().splitlines()
    access = [line for line in lines if "modelhub.access" in line]
    (traced,) = [line for line in access if "trace-42" in line]
    assert re.search(
        rf"trace-42 POST /v1/chat/completions 200 contract=default model={DEMO_MODEL} "
        r"tokens=\d+\+\d+ \d+\.\dms",
        traced,
    ), traced
    assert any(made.headers["x-request-id"] in line and " 401 " in line for line in access)
    # The first key is printed where it is shown to the operator, never in a log record
    # (records start with their time), not even from the query string.
    log = text_server.log.read_text()
    assert "mh-wrongwrong" not in log
    assert not [line for line in log.splitlines() if key[3:] in line and re.match(r"\d{4}-", line)]


def test_health_checks_and_third_parties_stay_quiet(text_server):
    for _ in range(5):
        httpx.get(f"{text_server.base_url}/health")
    log = text_server.log.read_text()
    assert "HTTP Request:" not in log  # httpx at INFO
    assert "llama_model_loader" not in log and "load_tensors" not in log


def test_json_logs_and_the_no_auth_warning(json_server):
    assert _chat(json_server.base_url, None, **{"X-Request-Id": "json-1"}).status_code == 200
    entries = [
        json.loads(line)
        for line in json_server.log.read_text().splitlines()
        if line.startswith("{")
    ]
    assert entries and all({"time", "level", "logger", "message"} <= set(e) for e in entries)
    warning = [
        e for e in entries if e["level"] == "warning" and "authentication is OFF" in e["message"]
    ]
    assert warning
    (access,) = [e for e in entries if e.get("request_id") == "json-1"]
    assert access["status"] == 200 and access["model"] == DEMO_MODEL
    assert access["contract"] == "anonymous" and access["completion_tokens"] >= 1
    assert access["latency_ms"] > 0
