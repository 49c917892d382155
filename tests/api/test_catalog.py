"""The catalog over HTTP: /v1/models metadata and the lifecycle, with a moved clock."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from tests.conftest import DEMO_MODEL, MISTRAL, make_settings
from tests.servers import MovableClock, start_server

from modelhub.settings import default_catalog_dir

QUESTION = [{"role": "user", "content": "Hi?"}]


def test_models_list_has_openai_shape_and_catalog_metadata(client, http):
    ids = [m.id for m in client.models.list()]
    assert set(ids) >= {DEMO_MODEL, MISTRAL, "meta-llama/Llama-3.3-70B-Instruct"}
    mistral = http.get(f"/v1/models/{MISTRAL}").json()
    assert mistral["object"] == "model" and mistral["id"] == MISTRAL
    assert mistral["owned_by"] == "mistralai"
    assert mistral["created"] == int(datetime(2025, 8, 1, tzinfo=UTC).timestamp())
    assert mistral["technology"] == {
        "context_window": 131072,
        "parameters": "24B",
        "quantization": "fp8",
        "multilingual": True,
        "hugging_face": "mistralai/Mistral-Small-3.2-24B-Instruct-2506",
    }
    assert mistral["modalities"] == {"input": ["text", "image"], "output": ["text"]}
    assert mistral["features"] == {"streaming": True, "reasoning": False, "tool_calling": True}
    assert mistral["endpoints"]["supported"] == ["/v1/chat/completions"]
    assert mistral["lifecycle"]["launch"] == "2025-08-01"
    assert mistral["lifecycle"]["end_of_life"] is None
    assert mistral["lifecycle"]["alternative"] == "meta-llama/Llama-3.3-70B-Instruct"
    assert mistral["lifecycle"]["status"] == "active"
    assert (
        mistral["origin"]["provider"] == "Mistral AI" and mistral["origin"]["country"] == "France"
    )
    assert mistral["origin"]["release"] == "2025-06-25"
    assert mistral["ratings"] == {
        "intelligence": "moderate",
        "speed": "high",
        "sovereignty": "moderate",
    }
    assert mistral["availability"] == {"available": False, "engine": None}
    demo = http.get(f"/v1/models/{DEMO_MODEL}").json()
    assert demo["demo"] is True and demo["availability"]["available"] is True
    assert demo["availability"]["engine"] == "llama.cpp"
    r = http.get("/v1/models/nope/nope")
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"


@pytest.fixture(scope="module")
def lifecycle(tmp_path_factory):
    catalog = tmp_path_factory.mktemp("catalog")
    demo = (default_catalog_dir() / "gemma-3-270m-demo.toml").read_text()
    card = demo.replace('id = "google/gemma-3-270m"', 'id = "demo/ageing"').replace(
        "[lifecycle]\nlaunch = 2025-08-14",
        '[lifecycle]\nlaunch = 2026-01-01\nend_of_life = 2027-01-01\nalternative = "demo/other"\nsuccessor = "demo/next"',
    )
    assert card != demo
    Path(catalog / "ageing.toml").write_text(card)
    clock = MovableClock()
    server = start_server(
        make_settings(
            tmp_path_factory.mktemp("life"), auth=False, catalog_dir=catalog, engine_slots=2
        ),
        clock=clock,
    )
    yield server, clock
    server.stop()


def test_lifecycle_follows_the_clock(lifecycle):
    server, clock = lifecycle
    body = {"model": "demo/ageing", "messages": QUESTION, "max_tokens": 2}
    with httpx.Client(base_url=server.base_url, timeout=60) as http:
        clock.now = datetime(2025, 12, 31, 23, 59, tzinfo=UTC)
        r = http.post("/v1/chat/completions", json=body)
        assert r.status_code == 404
        assert r.json()["error"]["code"] == "model_not_yet_available"
        assert "2026-01-01" in r.json()["error"]["message"]
        assert http.get("/v1/models/demo/ageing").json()["lifecycle"]["status"] == "upcoming"

        clock.now = datetime(2026, 6, 1, tzinfo=UTC)
        r = http.post("/v1/chat/completions", json=body)
        assert r.status_code == 200
        assert r.headers["deprecation"] == f"@{int(datetime(2027, 1, 1, tzinfo=UTC).timestamp())}"
        assert r.headers["sunset"] == "Fri, 01 Jan 2027 00:00:00 GMT"
        assert '</v1/models/demo/other>; rel="alternate"' in r.headers["link"]
        assert '</v1/models/demo/next>; rel="successor-version"' in r.headers["link"]
        assert http.get("/v1/models/demo/ageing").json()["lifecycle"]["status"] == "deprecated"

        clock.now = datetime(2027, 1, 1, tzinfo=UTC)
        r = http.post("/v1/chat/completions", json=body)
        assert r.status_code == 410
        err = r.json()["error"]
        assert err["code"] == "model_retired"
        assert "demo/next" in err["message"] and "demo/other" in err["message"]
        assert http.get("/v1/models/demo/ageing").json()["lifecycle"]["status"] == "retired"
