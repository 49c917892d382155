"""Configuration is checked before any model loads: one line per problem naming the
variable and the position in it, on stderr, with exit status 2 (``modelhub serve`` as a
separate process). None of these runs long: a check that let the server start would be
caught by the timeout."""

from __future__ import annotations

import json

import pytest

from modelhub.settings import load_settings
from tests.commands import modelhub

DEMO = "google/gemma-3-270m"


def refused(env: dict[str, str], tmp_path) -> list[str]:
    result = modelhub("serve", data_dir=tmp_path / "data", env=env, timeout=60)
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert all(line.startswith("modelhub: MODELHUB_") for line in lines), lines
    # Refused before anything loaded or listened.
    assert not (tmp_path / "data").exists()
    return lines


@pytest.mark.parametrize("port", ["99999", "0", "-1", "http"])
def test_port_out_of_range(tmp_path, port):
    (line,) = refused({"MODELHUB_PORT": port}, tmp_path)
    assert line.startswith("modelhub: MODELHUB_PORT: ")


def test_port_flag_is_checked_too(tmp_path):
    result = modelhub("serve", "--port", "70000", data_dir=tmp_path / "data", timeout=60)
    assert result.returncode == 2 and "MODELHUB_PORT" in result.stderr


def test_bad_json_is_one_line(tmp_path):
    (line,) = refused({"MODELHUB_BACKENDS": '{"x": {gguf}'}, tmp_path)
    assert "MODELHUB_BACKENDS: not valid JSON" in line and "column 8" in line


def test_every_backend_problem_at_once(tmp_path):
    gguf = tmp_path / "real.gguf"
    gguf.write_bytes(b"GGUF")
    backends = {
        DEMO: {"gguf": str(gguf), "upstreams": ["http://127.0.0.1:1/v1"]},
        "mistralai/Mistral-Small-24B-Instruct": {"gguf": str(tmp_path / "missing.gguf")},
        "meta-llama/Llama-3.3-70B-Instruct": {"upstream": ["http://x/v1"]},
    }
    lines = refused({"MODELHUB_BACKENDS": json.dumps(backends)}, tmp_path)
    text = "\n".join(lines)
    assert f'MODELHUB_BACKENDS["{DEMO}"]: give exactly one of gguf' in text
    assert 'MODELHUB_BACKENDS["mistralai/Mistral-Small-24B-Instruct"].gguf: no such file' in text
    assert '["meta-llama/Llama-3.3-70B-Instruct"]["upstream"]: unknown key' in text
    assert len(lines) >= 3


def test_neither_gguf_nor_upstreams(tmp_path):
    (line,) = refused({"MODELHUB_BACKENDS": json.dumps({DEMO: {}})}, tmp_path)
    assert "exactly one of gguf" in line


def test_unknown_model_in_backends(tmp_path):
    (line,) = refused(
        {"MODELHUB_BACKENDS": json.dumps({"mistral-small": {"upstreams": ["http://h/v1"]}})},
        tmp_path,
    )
    assert line.startswith('modelhub: MODELHUB_BACKENDS["mistral-small"]: not a catalog model')
    assert DEMO in line


def test_several_variables_reported_together(tmp_path):
    lines = refused({"MODELHUB_PORT": "99999", "MODELHUB_LOG_LEVEL": "loud"}, tmp_path)
    assert {line.split(":")[1].strip() for line in lines} == {"MODELHUB_PORT", "MODELHUB_LOG_LEVEL"}


def test_the_cli_commands_check_too(tmp_path):
    result = modelhub("contracts", "list", env={"MODELHUB_AUTH_CACHE_TTL_S": "-1"})
    assert result.returncode == 2
    assert result.stderr.startswith("modelhub: MODELHUB_AUTH_CACHE_TTL_S:")


def test_a_good_configuration_loads(tmp_path, monkeypatch):
    monkeypatch.setenv("MODELHUB_PORT", "8123")
    monkeypatch.setenv("MODELHUB_LOG_LEVEL", "DEBUG")
    monkeypatch.setenv("MODELHUB_BACKENDS", json.dumps({DEMO: {"gguf": "package:x"}}))
    settings = load_settings(data_dir=tmp_path)
    assert settings.port == 8123 and settings.log_level == "debug"
