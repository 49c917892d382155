"""The catalog describes the backend actually serving: the GGUF's quantization and
context, an upstream's max_model_len, and one max_model_len everywhere."""

from __future__ import annotations

import json
import shutil

import httpx
import pytest
from tests.commands import modelhub
from tests.conftest import DEMO_MODEL, make_settings
from tests.servers import start_server

from modelhub.settings import default_catalog_dir

LLAMA = "meta-llama/Llama-3.3-70B-Instruct"
QUESTION = [{"role": "user", "content": "Hi?"}]


@pytest.fixture(scope="module")
def misdescribed(tmp_path_factory, demo_server):
    """A catalog whose demo card claims fp8 and 128k, and the Llama card served by the demo
    server as its upstream."""
    tmp = tmp_path_factory.mktemp("facts")
    catalog = tmp / "models"
    shutil.copytree(default_catalog_dir(), catalog)
    card = catalog / "gemma-3-270m-demo.toml"
    text = card.read_text()
    text = text.replace('quantization = "Q4_K_M"', 'quantization = "fp8"')
    text = text.replace("context_window = 32768", "context_window = 131072")
    card.write_text(text)
    settings = make_settings(
        tmp,
        auth=False,
        catalog_dir=catalog,
        engine_context=2048,
        backends={LLAMA: {"upstreams": [demo_server.api_url], "served_model_name": DEMO_MODEL}},
    )
    server = start_server(settings)
    yield server
    server.stop()


def _model(server, model_id: str) -> dict:
    return httpx.get(f"{server.base_url}/v1/models/{model_id}", timeout=30).json()


def test_a_gguf_is_described_by_its_header_not_the_card(misdescribed):
    demo = _model(misdescribed, DEMO_MODEL)
    assert demo["technology"]["quantization"] == "Q4_K_M"
    # The engine's KV size (2048) is below the GGUF's trained 32768 and the card's claim.
    assert demo["technology"]["context_window"] == demo["max_model_len"] == 2048


def test_an_upstream_is_described_by_its_max_model_len(misdescribed, demo_server):
    upstream_len = _model(demo_server, DEMO_MODEL)["max_model_len"]
    llama = _model(misdescribed, LLAMA)
    assert llama["max_model_len"] == upstream_len < 131072
    assert llama["technology"]["context_window"] == upstream_len


def test_one_max_model_len_for_models_tokenize_and_the_cli(demo_server, tmp_path):
    served = _model(demo_server, DEMO_MODEL)["max_model_len"]
    counted = httpx.post(
        f"{demo_server.base_url}/tokenize",
        json={"model": DEMO_MODEL, "messages": QUESTION},
        timeout=60,
    ).json()
    settings = demo_server.settings
    cli = modelhub(
        "tokenize",
        "--model",
        DEMO_MODEL,
        stdin=json.dumps({"messages": QUESTION}),
        data_dir=tmp_path,
        env={"MODELHUB_ENGINE_CONTEXT": str(settings.engine_context)},
    )
    assert cli.returncode == 0, cli.stderr
    assert counted["max_model_len"] == json.loads(cli.stdout)["max_model_len"] == served
    assert served == settings.engine_context
