"""/v1/completions on the demo model: token-id prompts, ignore_eos, and bad input."""

from __future__ import annotations

import pytest
from tests.conftest import DEMO_MODEL, MISTRAL

# Token ids the demo model's vocabulary holds (gemma's BOS is 2); any ids will do for a
# continuation.
PROMPT_IDS = [2, 818, 5279, 529, 7001, 563, 9079, 236764]


def _error(response, status: int) -> dict:
    assert response.status_code == status, response.text
    return response.json()["error"]


def test_token_ids_with_ignore_eos_give_exactly_max_tokens(client):
    done = client.completions.create(
        model=DEMO_MODEL,
        prompt=PROMPT_IDS,
        max_tokens=12,
        temperature=0,
        extra_body={"ignore_eos": True},
    )
    assert done.object == "text_completion"
    assert done.usage.prompt_tokens == len(PROMPT_IDS)
    assert done.usage.completion_tokens == 12
    assert done.choices[0].finish_reason == "length"
    assert done.choices[0].text


def test_stream_matches_the_whole_answer_and_reports_usage(client):
    args = {"model": DEMO_MODEL, "prompt": PROMPT_IDS, "max_tokens": 8, "temperature": 0}
    whole = client.completions.create(**args, extra_body={"ignore_eos": True})
    chunks = list(
        client.completions.create(
            **args,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"ignore_eos": True},
        )
    )
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == whole.choices[0].text
    assert all(c.object == "text_completion" for c in chunks)
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 8
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"


def test_text_prompt_is_accepted(client):
    done = client.completions.create(
        model=DEMO_MODEL, prompt="The capital of France is", max_tokens=4, temperature=0
    )
    assert done.usage.prompt_tokens > 1
    assert 0 < done.usage.completion_tokens <= 4


@pytest.mark.parametrize(
    ("prompt", "param"),
    [([2, -1, 5], "prompt"), ([2, 10**9], "prompt"), ([], "prompt"), ([2, "x"], "prompt")],
)
def test_bad_token_ids_are_refused_with_400(http, prompt, param):
    err = _error(
        http.post("/v1/completions", json={"model": DEMO_MODEL, "prompt": prompt}),
        400,
    )
    assert err["type"] == "invalid_request_error"
    assert param in (err["param"] or "") or param in err["message"]


def test_prompt_over_the_context_window_is_refused(http):
    body = {"model": DEMO_MODEL, "prompt": [2] * 4000, "max_tokens": 200}
    err = _error(http.post("/v1/completions", json=body), 400)
    assert err["code"] == "context_length_exceeded"


def test_model_without_a_local_engine_is_refused(http):
    err = _error(http.post("/v1/completions", json={"model": MISTRAL, "prompt": [1, 2]}), 503)
    assert err["code"] == "model_not_configured"
