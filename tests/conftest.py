from __future__ import annotations

import importlib.util
from functools import cache
from pathlib import Path
from types import ModuleType

import httpx
import openai
import pytest

from modelhub.settings import Settings, default_catalog_dir
from tests.platform.servers import PostgresCluster, RedisServer
from tests.servers import RunningServer, start_server
from tests.vllm_double import VllmDouble

DATA = Path(__file__).parent / "data"
CACHE = Path.home() / ".cache" / "modelhub"
TINY_MISTRAL_CACHE = CACHE / "tiny-mistral"
DEMO_MODEL = "google/gemma-3-270m"
MISTRAL = "mistralai/Mistral-Small-24B-Instruct"
# A schema that forces a long answer: the generation runs until the client leaves (the demo
# model's plain format would otherwise end an answer within a few dozen tokens).
LONG_ANSWER = {
    "type": "json_schema",
    "json_schema": {
        "name": "essay",
        "schema": {
            "type": "object",
            "properties": {"text": {"type": "string", "minLength": 3000}},
            "required": ["text"],
        },
    },
}


def make_settings(tmp: Path, *, auth: bool, **overrides) -> Settings:
    """The one test settings factory. ``auth`` has no default: every test says whether its
    server checks API keys."""
    base = {
        "data_dir": tmp / "data",
        "cache_dir": CACHE,
        "catalog_dir": default_catalog_dir(),
        "auth": auth,
        "engine_slots": 8,
        "engine_context": 4096,
        "engine_queue": 32,
        # Ledger rows visible within moments, for the tests that read them back.
        "ledger_flush_interval_s": 0.05,
        # Many apps start in this one process; gc.freeze would keep each one's garbage.
        "gc_freeze": False,
    }
    return Settings(**{**base, **overrides})


@cache
def tiny_mistral_script() -> ModuleType:
    """``scripts/make_tiny_mistral.py``, which is a script rather than a package module."""
    path = Path(__file__).parents[1] / "scripts" / "make_tiny_mistral.py"
    spec = importlib.util.spec_from_file_location("make_tiny_mistral", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def tiny_mistral() -> tuple[Path, Path, Path]:
    """The tiny random Mistral Small 3.2: (GGUF, vision projector, tekken.json), made once
    and cached across runs."""
    return tiny_mistral_script().make_tiny_mistral(TINY_MISTRAL_CACHE)


@pytest.fixture
def vllm_double() -> VllmDouble:
    """A vLLM-shaped upstream serving Mistral Small 3.2 (see ``tests/vllm_double.py``)."""
    double = VllmDouble(CACHE).start()
    yield double
    double.stop()


@pytest.fixture(scope="session")
def demo_server(tmp_path_factory) -> RunningServer:
    server = start_server(make_settings(tmp_path_factory.mktemp("demo"), auth=False))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def tight_server(tmp_path_factory) -> RunningServer:
    """One slot, no queue, a 64 KiB body limit: for back-pressure, 413 and disconnects."""
    server = start_server(
        make_settings(
            tmp_path_factory.mktemp("tight"),
            auth=False,
            engine_slots=1,
            engine_queue=0,
            max_body_bytes=64 * 1024,
        )
    )
    yield server
    server.stop()


@pytest.fixture
def client(demo_server) -> openai.OpenAI:
    return openai.OpenAI(base_url=demo_server.api_url, api_key="unused", max_retries=0, timeout=120)


@pytest.fixture
def http(demo_server) -> httpx.Client:
    with httpx.Client(base_url=demo_server.base_url, timeout=120) as c:
        yield c


@pytest.fixture(scope="session")
def postgres():
    """A throwaway PostgreSQL cluster (Debian's binaries, own port, temp dir)."""
    cluster = PostgresCluster()
    cluster.start()
    yield cluster
    cluster.destroy()


@pytest.fixture(scope="session")
def redis_server():
    """Debian's redis-server on its own port."""
    server = RedisServer()
    yield server
    server.destroy()
