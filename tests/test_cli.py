"""``modelhub`` as an operator runs it: a separate process, its stdout, stderr and exit
status. Each test is one of the traps the CLI used to have."""

from __future__ import annotations

import json

import pytest

from modelhub import __version__
from tests.commands import modelhub, secret_in
from tests.conftest import DEMO_MODEL


@pytest.fixture
def data_dir(tmp_path):
    return tmp_path / "data"


def ok(result) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


def failed(result, status: int = 1) -> str:
    """A failure says why on stderr, nothing on stdout, and exits non-zero."""
    assert result.returncode == status, (result.returncode, result.stdout, result.stderr)
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    return result.stderr


def test_version():
    assert ok(modelhub("--version")).strip() == f"modelhub {__version__}"


def test_data_dir_flag_and_the_database_is_named(tmp_path):
    elsewhere = tmp_path / "run-from-here"
    elsewhere.mkdir()
    chosen = tmp_path / "chosen"
    # Flag before or after the command; the working directory plays no part.
    result = modelhub("--data-dir", str(chosen), "contracts", "create", "acme", cwd=elsewhere)
    ok(result)
    assert f"database: sqlite+aiosqlite:///{chosen}/modelhub.db" in result.stderr
    listed = modelhub("contracts", "list", "--data-dir", str(chosen), cwd=elsewhere)
    assert ok(listed).startswith("acme  active")
    assert not (elsewhere / "data").exists()


def test_database_url_flag(tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path}/other.db"
    result = modelhub("--database-url", url, "contracts", "create", "viaurl")
    ok(result)
    assert f"database: {url}" in result.stderr
    assert (tmp_path / "other.db").exists()


def test_errors_go_to_stderr_with_a_nonzero_status(data_dir):
    assert "no contract named 'nobody'" in failed(
        modelhub("keys", "create", "--contract", "nobody", data_dir=data_dir)
    )
    assert "no contract named 'nobody'" in failed(
        modelhub("contracts", "show", "nobody", data_dir=data_dir)
    )
    ok(modelhub("contracts", "create", "dup", data_dir=data_dir))
    assert "already exists" in failed(modelhub("contracts", "create", "dup", data_dir=data_dir))
    assert "no key" in failed(modelhub("keys", "revoke", "mh-nothing12", data_dir=data_dir))
    # argparse's own errors are on stderr too (status 2).
    assert "invalid choice" in failed(modelhub("keys", "frobnicate", data_dir=data_dir), 2)


@pytest.mark.parametrize("name", ["", " ", "has space", "semi;colon", ".dot-first", "x" * 101])
def test_bad_contract_names_are_refused(data_dir, name):
    assert "contract's name" in failed(modelhub("contracts", "create", name, data_dir=data_dir))
    assert ok(modelhub("contracts", "list", data_dir=data_dir)) == ""


def test_model_ids_are_checked_against_the_catalog(data_dir):
    error = failed(modelhub("contracts", "create", "c", "--models", "gpt-4", data_dir=data_dir))
    assert "gpt-4" in error and DEMO_MODEL in error
    error = failed(modelhub("contracts", "create", "c", "--price", "gpt-4=1/2", data_dir=data_dir))
    assert "prices" in error
    ok(modelhub("contracts", "create", "c", "--models", DEMO_MODEL, data_dir=data_dir))
    assert "gpt-4" in failed(
        modelhub("contracts", "update", "c", "--models", "gpt-4", data_dir=data_dir)
    )


def test_show_suspend_resume(data_dir):
    ok(
        modelhub(
            "contracts", "create", "acme", "--rpm", "10", "--max-running", "2", data_dir=data_dir
        )
    )
    ok(modelhub("keys", "create", "--contract", "acme", "--name", "ci", data_dir=data_dir))
    shown = json.loads(
        ok(modelhub("contracts", "show", "acme", "--format", "json", data_dir=data_dir))
    )
    assert shown["limits"] == {"rpm": 10, "max_running": 2}
    assert [k["name"] for k in shown["keys"]] == ["ci"]
    assert "suspended" in ok(modelhub("contracts", "suspend", "acme", data_dir=data_dir))
    assert "acme  active" in ok(modelhub("contracts", "resume", "acme", data_dir=data_dir))
    text = ok(modelhub("contracts", "show", "acme", data_dir=data_dir))
    assert "acme  active  rpm=10 max_running=2" in text and "name=ci" in text


def test_revoke_by_id_prefix_or_full_key_and_rotate(data_dir):
    ok(modelhub("contracts", "create", "acme", data_dir=data_dir))
    secrets = [
        secret_in(ok(modelhub("keys", "create", "--contract", "acme", data_dir=data_dir)))
        for _ in range(4)
    ]
    keys = json.loads(ok(modelhub("keys", "list", "--format", "json", data_dir=data_dir)))
    assert "revoked" in ok(modelhub("keys", "revoke", str(keys[0]["id"]), data_dir=data_dir))
    assert "revoked" in ok(modelhub("keys", "revoke", secrets[1][:12], data_dir=data_dir))
    full = modelhub("keys", "revoke", secrets[2], data_dir=data_dir)
    assert "revoked" in ok(full) and secrets[2] not in full.stdout + full.stderr
    rotated = ok(modelhub("keys", "rotate", secrets[3], data_dir=data_dir))
    new = secret_in(rotated)
    assert new != secrets[3] and secrets[3] not in rotated
    after = json.loads(ok(modelhub("keys", "list", "--format", "json", data_dir=data_dir)))
    assert [k["revoked_at"] is not None for k in after] == [True, True, True, True, False]
    assert after[-1]["prefix"] == new[:12]
    assert "revoked" in failed(modelhub("keys", "rotate", secrets[3], data_dir=data_dir))


@pytest.mark.parametrize(
    "since", ["yesterday", "7d", "12h", "today", "2026-01-01", "2026-01-01T08:00"]
)
def test_usage_accepts_dates_and_ages(data_dir, since):
    ok(modelhub("contracts", "create", "acme", data_dir=data_dir))
    out = ok(
        modelhub(
            "usage", "--contract", "acme", "--since", since, "--format", "csv", data_dir=data_dir
        )
    )
    header, totals = out.splitlines()[:2]
    assert "requests" in header.split(",")
    assert set(totals.split(",")) == {"0", "0.0"}  # every count and the cost: nothing yet


def test_a_bad_moment_names_no_internals(data_dir):
    error = failed(modelhub("usage", "--since", "last tuesday", data_dir=data_dir))
    assert "--since" in error and "yesterday" in error and "7d" in error
    for internal in ("_when", "fromisoformat", "parse_moment", "Traceback"):
        assert internal not in error


def test_usage_of_every_contract_by_hour_and_status(data_dir):
    assert ok(modelhub("usage", "--by", "hour", "--format", "json", data_dir=data_dir)) == "[]"
    assert ok(modelhub("usage", "--by", "status", "--format", "csv", data_dir=data_dir)).startswith(
        "status,requests"
    )


def test_admin_tokens(data_dir):
    created = ok(modelhub("admin-tokens", "create", "ops", data_dir=data_dir))
    token = secret_in(created, "mha-")
    listed = ok(modelhub("admin-tokens", "list", data_dir=data_dir))
    assert "name=ops" in listed and token[:13] in listed and token not in listed
    assert "revoked" in ok(modelhub("admin-tokens", "revoke", token[:13], data_dir=data_dir))
    assert "name" in failed(modelhub("admin-tokens", "create", "", data_dir=data_dir))
