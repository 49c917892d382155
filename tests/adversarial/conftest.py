"""Servers for the adversarial suite: the demo model and the tiny Mistral (images), with
tight server limits so that the hostile cases finish quickly."""

from __future__ import annotations

import os

import httpx
import pytest

from tests.conftest import MISTRAL, make_settings
from tests.servers import RunningServer, start_server


def rss_mb() -> int:
    """This process's resident memory: the test servers run in its threads."""
    with open(f"/proc/{os.getpid()}/status") as status:
        for line in status:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) // 1024
    raise RuntimeError("no VmRSS")


@pytest.fixture(scope="session")
def hostile_server(tmp_path_factory, tiny_mistral) -> RunningServer:
    gguf, mmproj, tekken = tiny_mistral
    settings = make_settings(
        tmp_path_factory.mktemp("hostile"),
        auth=False,
        backends={MISTRAL: {"gguf": str(gguf), "mmproj": str(mmproj), "tokenizer": str(tekken)}},
        engine_slots=2,
        engine_queue=0,
        engine_context=2048,
        header_read_timeout_s=2,
        max_header_bytes=16 * 1024,
    )
    server = start_server(settings)
    yield server
    server.stop()


@pytest.fixture
def hostile(hostile_server) -> httpx.Client:
    with httpx.Client(base_url=hostile_server.base_url, timeout=120) as client:
        yield client
