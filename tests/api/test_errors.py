"""Every refusal is an OpenAI-shaped error with the right status, type, param and code."""

from __future__ import annotations

import threading

import httpx
import openai
import pytest
from tests.conftest import DEMO_MODEL, LONG_ANSWER, MISTRAL
from tests.sse import sse_data

QUESTION = [{"role": "user", "content": "Hi?"}]


def _error(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["message"]
    return body["error"]


@pytest.mark.parametrize(
    ("patch", "param"),
    [
        ({"temperature": 5}, "temperature"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"n": 0}, "n"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "messages[0]"),
        ({"messages": [{"role": "user"}]}, "messages[0].content"),
        ({"top_logprobs": 3}, "top_logprobs"),
    ],
)
def test_invalid_parameters_name_the_param(http, patch, param):
    err = _error(
        http.post(
            "/v1/chat/completions", json={"model": DEMO_MODEL, "messages": QUESTION, **patch}
        ),
        400,
    )
    assert err["type"] == "invalid_request_error"
    assert err["param"] == param


def test_missing_model_and_bad_json(http):
    err = _error(http.post("/v1/chat/completions", json={"messages": QUESTION}), 400)
    assert err["param"] == "model"
    err = _error(
        http.post(
            "/v1/chat/completions",
            content=b"{not json",
            headers={"content-type": "application/json"},
        ),
        400,
    )
    assert err["type"] == "invalid_request_error"


def test_unknown_model_lists_the_available_ones(http):
    err = _error(
        http.post("/v1/chat/completions", json={"model": "nope/nope", "messages": QUESTION}), 404
    )
    assert err["code"] == "model_not_found" and err["param"] == "model"
    assert DEMO_MODEL in err["message"] and MISTRAL in err["message"]


def test_sdk_raises_typed_errors(client):
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope/nope", messages=QUESTION)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=DEMO_MODEL, messages=QUESTION, temperature=9)


def test_unknown_route_and_wrong_method(http):
    err = _error(http.post("/v1/nothing-here", json={}), 404)
    assert "/v1/nothing-here" in err["message"]
    err = _error(http.get("/v1/chat/completions"), 405)
    assert err["code"] == "method_not_allowed"


def test_unconfigured_model_says_how_to_configure_it(http):
    err = _error(
        http.post("/v1/chat/completions", json={"model": MISTRAL, "messages": QUESTION}), 503
    )
    assert err["code"] == "model_not_configured"
    assert "MODELHUB_BACKENDS" in err["message"]


@pytest.mark.parametrize("path", ["/v1/embeddings", "/v1/images/generations", "/v1/audio/speech"])
def test_unsupported_endpoints_name_the_model_and_its_endpoints(http, path):
    err = _error(http.post(path, json={"model": MISTRAL, "input": "x", "prompt": "x"}), 400)
    assert err["code"] == "endpoint_not_supported"
    assert MISTRAL in err["message"] and "/v1/chat/completions" in err["message"]


def test_embeddings_through_the_sdk(client):
    with pytest.raises(openai.BadRequestError) as info:
        client.embeddings.create(model=DEMO_MODEL, input="hello")
    assert "does not support embeddings" in str(info.value)


def test_images_audio_and_reasoning_are_refused_for_the_demo_model(http):
    image = {
        "role": "user",
        "content": [
            {"type": "text", "text": "see"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        ],
    }
    err = _error(
        http.post("/v1/chat/completions", json={"model": DEMO_MODEL, "messages": [image]}), 400
    )
    assert err["param"] == "messages[0].content[1]" and "image" in err["message"]
    audio = {
        "role": "user",
        "content": [{"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}],
    }
    err = _error(
        http.post("/v1/chat/completions", json={"model": DEMO_MODEL, "messages": [audio]}), 400
    )
    assert "does not support audio input" in err["message"]
    err = _error(
        http.post(
            "/v1/chat/completions",
            json={"model": DEMO_MODEL, "messages": QUESTION, "reasoning_effort": "high"},
        ),
        400,
    )
    assert err["param"] == "reasoning_effort"
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    err = _error(
        http.post(
            "/v1/chat/completions",
            json={"model": DEMO_MODEL, "messages": QUESTION, "tools": [tool]},
        ),
        400,
    )
    assert err["param"] == "tools"


def test_context_window_is_enforced(http):
    err = _error(
        http.post(
            "/v1/chat/completions",
            json={"model": DEMO_MODEL, "messages": QUESTION, "max_tokens": 100000},
        ),
        400,
    )
    assert err["code"] == "context_length_exceeded"
    assert "100000" in err["message"]


def test_body_over_the_limit_is_413(tight_server):
    big = "x" * (100 * 1024)
    with httpx.Client(base_url=tight_server.base_url, timeout=30) as http:
        err = _error(
            http.post(
                "/v1/chat/completions",
                json={"model": DEMO_MODEL, "messages": [{"role": "user", "content": big}]},
            ),
            413,
        )
        assert "limit" in err["message"]

        def chunks():
            yield (
                b'{"model": "'
                + DEMO_MODEL.encode()
                + b'", "messages": [{"role": "user", "content": "'
            )
            for _ in range(100):
                yield b"x" * 1024
            yield b'"}]}'

        # Chunked upload: no Content-Length to check up front.
        _error(
            http.post(
                "/v1/chat/completions",
                content=chunks(),
                headers={"content-type": "application/json"},
            ),
            413,
        )


def test_full_engine_answers_503_with_retry_after(tight_server):
    body = {
        "model": DEMO_MODEL,
        "messages": QUESTION,
        "max_tokens": 1500,
        "stream": True,
        "response_format": LONG_ANSWER,
    }
    started = threading.Event()
    with httpx.Client(base_url=tight_server.base_url, timeout=60) as http:
        with http.stream("POST", "/v1/chat/completions", json=body) as r:
            events = sse_data(r.iter_lines())  # kept: dropping it would close the connection
            next(events)
            started.set()
            second = http.post(
                "/v1/chat/completions",
                json={"model": DEMO_MODEL, "messages": QUESTION, "max_tokens": 4},
            )
        err = _error(second, 503)
        assert err["code"] == "engine_overloaded"
        assert int(second.headers["retry-after"]) >= 1
