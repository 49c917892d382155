"""/metrics: what vLLM users graph, and every status counted (real server, auth off)."""

from __future__ import annotations

import re

from tests.conftest import DEMO_MODEL

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def _value(text: str, pattern: str) -> float:
    """The sum of every sample matching ``pattern`` (a regex over the name and labels)."""
    return sum(float(m.group(1)) for m in re.finditer(rf"^{pattern} (\S+)$", text, re.MULTILINE))


def test_every_status_is_counted_including_refusals_before_the_route(http):
    before = http.get("/metrics").text
    http.post("/v1/chat/completions", json={"model": DEMO_MODEL, "messages": "not a list"})  # 400
    http.post(
        "/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"}
    )
    http.post("/v1/chat/completions", json={"model": "no/such", "messages": QUESTION})  # 404
    http.get("/v1/nowhere")  # 404, no route
    after = http.get("/metrics").text

    def grew(pattern: str) -> float:
        return _value(after, pattern) - _value(before, pattern)

    # Validation 400s happen before the route runs: the model is not known yet.
    assert grew(r'modelhub_requests_total\{model="unknown",status="400"\}') == 2
    assert grew(r'modelhub_requests_total\{model="unknown",status="404"\}') == 1
    assert grew(r'modelhub_http_responses_total\{endpoint="unmatched",status="404"\}') == 1
    assert grew(r'modelhub_contract_requests_total\{contract="anonymous",status="404"\}') == 1
    # A client's made-up model name never becomes a label.
    assert "no/such" not in after


def test_latency_queue_time_kv_cache_and_preemptions(http):
    r = http.post(
        "/v1/chat/completions", json={"model": DEMO_MODEL, "messages": QUESTION, "max_tokens": 4}
    )
    assert r.status_code == 200
    text = http.get("/metrics").text
    model = f'model="{DEMO_MODEL}"'
    assert _value(text, rf"modelhub_request_latency_seconds_count\{{{model}\}}") >= 1
    assert _value(text, rf"modelhub_request_latency_seconds_sum\{{{model}\}}") > 0
    assert _value(text, rf"modelhub_queue_time_seconds_count\{{{model}\}}") >= 1
    assert re.search(
        rf"^modelhub_engine_kv_cache_usage_ratio\{{{model}\}} [0-9.e-]+$", text, re.MULTILINE
    )
    assert re.search(r"^# TYPE modelhub_engine_preemptions(_total)? counter$", text, re.MULTILINE)
    assert re.search(rf"^modelhub_engine_preemptions_total\{{{model}\}} \d", text, re.MULTILINE)
    # Label order in the exposition is prometheus_client's (sorted in recent versions).
    labels = rf'(?=[^}}]*{model})(?=[^}}]*contract="anonymous")[^}}]*'
    assert _value(text, rf"modelhub_prompt_tokens_total\{{{labels}\}}") > 0
    assert (
        _value(
            text, r'modelhub_http_responses_total\{endpoint="/v1/chat/completions",status="200"\}'
        )
        >= 1
    )


def test_prefix_cache_queries_hits_and_bytes(http):
    # A prompt over one prefill chunk (256 tokens), so its repeat reuses whole chunks.
    long_question = [{"role": "user", "content": "Tell me about rivers. " * 120}]
    body = {"model": DEMO_MODEL, "messages": long_question, "max_tokens": 2}
    model = f'model="{DEMO_MODEL}"'
    assert http.post("/v1/chat/completions", json=body).status_code == 200
    before = http.get("/metrics").text
    r = http.post("/v1/chat/completions", json=body)
    assert r.status_code == 200
    after = http.get("/metrics").text

    def grew(name: str) -> float:
        pattern = rf"{name}\{{{model}\}}"
        return _value(after, pattern) - _value(before, pattern)

    prompt = r.json()["usage"]["prompt_tokens"]
    assert grew("modelhub_engine_prefix_cache_queries_total") == prompt
    assert 256 <= grew("modelhub_engine_prefix_cache_hits_total") < prompt
    assert _value(after, rf"modelhub_engine_prefix_cache_bytes\{{{model}\}}") > 0
