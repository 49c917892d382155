"""The admin API (/admin/v1) through a real server on loopback, with admin tokens the CLI
creates. Every endpoint, and every way in that must be refused."""

from __future__ import annotations

import csv
import io

import httpx
import pytest
from tests.commands import modelhub, secret_in
from tests.conftest import DEMO_MODEL, MISTRAL, make_settings
from tests.processes import free_port
from tests.servers import start_server

LLAMA = "meta-llama/Llama-3.3-70B-Instruct"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def admin_hub(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("admin")
    settings = make_settings(
        tmp,
        auth=True,
        ledger_flush_interval_s=0.05,
        auth_cache_ttl_s=0,
        # Nothing listens there: the replica is reported unhealthy.
        backends={LLAMA: {"upstreams": [f"http://127.0.0.1:{free_port()}/v1"]}},
    )
    created = modelhub("admin-tokens", "create", "ci", data_dir=settings.data_dir)
    assert created.returncode == 0, created.stderr
    token = secret_in(created.stdout, "mha-")
    first_keys: list[str] = []
    server = start_server(settings, on_first_key=first_keys.append)
    with httpx.Client(
        base_url=server.base_url + "/admin/v1",
        headers={"Authorization": f"Bearer {token}"},
        timeout=120,
    ) as admin:
        yield server, admin, token, first_keys[0]
    server.stop()


def _chat(server, key: str, **body) -> httpx.Response:
    return httpx.post(
        f"{server.base_url}/v1/chat/completions",
        json={"model": DEMO_MODEL, "messages": QUESTION, "max_tokens": 3, **body},
        headers={"Authorization": f"Bearer {key}"},
        timeout=120,
    )


def _error(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


# Who may use it --------------------------------------------------------------------------
def test_no_token_is_401_and_a_tenant_key_is_403(admin_hub):
    server, _, _, tenant_key = admin_hub
    url = server.base_url + "/admin/v1/contracts"
    assert _error(httpx.get(url), 401)["type"] == "authentication_error"
    for wrong in ("mha-not-a-token", "garbage", "mh-not-a-key"):
        assert _error(httpx.get(url, headers={"Authorization": f"Bearer {wrong}"}), 401)
    forbidden = _error(httpx.get(url, headers={"Authorization": f"Bearer {tenant_key}"}), 403)
    assert forbidden["type"] == "permission_error" and "admin token" in forbidden["message"]
    # Every route is guarded, not only the first.
    for method, path in (("GET", "/usage"), ("GET", "/backends"), ("DELETE", "/keys/1")):
        r = httpx.request(method, server.base_url + "/admin/v1" + path)
        assert r.status_code == 401, (path, r.text)


def test_admin_tokens_listed_created_and_revoked(admin_hub):
    server, admin, token, _ = admin_hub
    listed = admin.get("/admin-tokens").json()["data"]
    assert [t["name"] for t in listed] == ["ci"] and token not in str(listed)
    created = admin.post("/admin-tokens", json={"name": "console"})
    assert created.status_code == 201
    second = created.json()["token"]
    assert second.startswith("mha-") and second[:13] == created.json()["prefix"]
    headers = {"Authorization": f"Bearer {second}"}
    assert httpx.get(server.base_url + "/admin/v1/contracts", headers=headers).status_code == 200
    revoked = admin.delete(f"/admin-tokens/{second}")
    assert revoked.status_code == 200 and revoked.json()["revoked_at"]
    assert httpx.get(server.base_url + "/admin/v1/contracts", headers=headers).status_code == 401
    assert second not in str(admin.get("/admin-tokens").json())


# Contracts -------------------------------------------------------------------------------
def test_contract_lifecycle(admin_hub):
    server, admin, _, _ = admin_hub
    created = admin.post(
        "/contracts",
        json={
            "name": "acme",
            "limits": {"rpm": 100, "max_running": 2},
            "prices": {DEMO_MODEL: {"input_per_million": 0.5, "output_per_million": 1.5}},
        },
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["name"] == "acme" and body["status"] == "active" and body["models"] is None
    assert body["limits"] == {"rps": None, "burst": None, "rpm": 100, "tpm": None, "max_running": 2}
    assert body["prices"][DEMO_MODEL] == {"input_per_million": 0.5, "output_per_million": 1.5}
    assert body["created_at"]
    assert admin.get("/contracts/acme").json() == body
    assert "acme" in [c["name"] for c in admin.get("/contracts").json()["data"]]

    patched = admin.patch(
        "/contracts/acme", json={"limits": {"rpm": None, "tpm": 5000}, "models": [DEMO_MODEL]}
    ).json()
    assert patched["limits"]["rpm"] is None and patched["limits"]["tpm"] == 5000
    assert patched["limits"]["max_running"] == 2  # not given: unchanged
    assert patched["models"] == [DEMO_MODEL]
    reopened = admin.patch("/contracts/acme", json={"models": None, "prices": {DEMO_MODEL: None}})
    assert reopened.json()["models"] is None and reopened.json()["prices"] == {}

    key = admin.post("/contracts/acme/keys", json={"name": "app"}).json()["key"]
    assert _chat(server, key).status_code == 200
    suspended = admin.post("/contracts/acme/suspend")
    assert suspended.json()["status"] == "suspended"
    assert _error(_chat(server, key), 403)["code"] == "contract_suspended"
    assert admin.post("/contracts/acme/resume").json()["status"] == "active"
    assert _chat(server, key).status_code == 200


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"name": ""}, "name"),
        ({"name": "has space"}, "name"),
        ({"name": "x" * 101}, "name"),
        ({"name": "ok", "models": ["no/such-model"]}, "models"),
        (
            {
                "name": "ok",
                "prices": {"no/such": {"input_per_million": 1, "output_per_million": 1}},
            },
            "prices",
        ),
        ({"name": "ok", "limits": {"rpm": 0}}, "limits.rpm"),
        ({"name": "ok", "limits": {"rpn": 5}}, "limits.rpn"),
        ({"name": "ok", "colour": "red"}, "colour"),
    ],
)
def test_bad_contracts_are_400(admin_hub, body, param):
    _, admin, _, _ = admin_hub
    error = _error(admin.post("/contracts", json=body), 400)
    assert error["param"] == param, error
    assert "ok" not in [c["name"] for c in admin.get("/contracts").json()["data"]]


def test_unknown_and_duplicate_contracts(admin_hub):
    _, admin, _, _ = admin_hub
    assert _error(admin.get("/contracts/nobody"), 404)["type"] == "not_found_error"
    assert _error(admin.patch("/contracts/nobody", json={"status": "active"}), 404)
    assert _error(admin.post("/contracts/nobody/suspend"), 404)
    assert _error(admin.post("/contracts/nobody/keys", json={}), 404)
    assert admin.post("/contracts", json={"name": "twice"}).status_code == 201
    assert (
        "already exists" in _error(admin.post("/contracts", json={"name": "twice"}), 400)["message"]
    )


# Keys ------------------------------------------------------------------------------------
def test_keys_created_listed_rotated_and_revoked_three_ways(admin_hub):
    server, admin, _, _ = admin_hub
    admin.post("/contracts", json={"name": "keyring"})
    made = [admin.post("/contracts/keyring/keys", json={"name": f"k{i}"}) for i in range(3)]
    assert all(r.status_code == 201 for r in made)
    secrets = [r.json()["key"] for r in made]
    listed = admin.get("/contracts/keyring/keys").json()["data"]
    assert [k["name"] for k in listed] == ["k0", "k1", "k2"]
    assert all(s not in str(listed) for s in secrets)  # never the key itself
    assert set(listed[0]) == {
        "id",
        "contract",
        "name",
        "prefix",
        "created_at",
        "last_used_at",
        "revoked_at",
        "expires_at",
    }
    assert all(k["contract"] == "keyring" for k in admin.get("/keys").json()["data"][-3:])

    rotated = admin.post(f"/keys/{made[0].json()['prefix']}/rotate")
    assert rotated.status_code == 201
    new = rotated.json()
    assert new["name"] == "k0" and new["key"] != secrets[0] and new["revoked_at"] is None
    assert _chat(server, new["key"]).status_code == 200
    assert _error(_chat(server, secrets[0]), 401)
    assert _error(admin.post(f"/keys/{made[0].json()['id']}/rotate"), 400)  # already revoked

    by_id = admin.delete(f"/keys/{made[1].json()['id']}")
    by_full_key = admin.delete(f"/keys/{secrets[2]}")
    assert by_id.json()["revoked_at"] and by_full_key.json()["revoked_at"]
    assert secrets[2] not in by_full_key.text
    for secret in secrets[1:]:
        assert _error(_chat(server, secret), 401)
    missing = _error(admin.delete("/keys/mh-nosuchkeyatallxxxxxxxxxxxxxxxxxxxx"), 404)
    assert "nosuchkeyatall" not in missing["message"]  # a whole key is never echoed


# Usage -----------------------------------------------------------------------------------
def test_usage_across_contracts_by_every_grouping(admin_hub):
    server, admin, _, default_key = admin_hub
    assert _chat(server, default_key).status_code == 200  # another contract's request
    admin.post("/contracts", json={"name": "metered"})
    key = admin.post("/contracts/metered/keys", json={"name": "m"}).json()["key"]
    assert _chat(server, key).status_code == 200
    assert _chat(server, key, model=LLAMA).status_code == 502  # its one replica is down

    def usage(**params) -> list[dict]:
        r = admin.get("/usage", params=params)
        assert r.status_code == 200, r.text
        return r.json()["data"]

    (mine,) = usage(contract="metered")
    assert mine["requests"] == 2 and mine["completion_tokens"] >= 1
    everyone = usage()[0]
    assert everyone["requests"] > mine["requests"]
    by_model = {row["model"]: row for row in usage(contract="metered", by="model")}
    assert set(by_model) == {DEMO_MODEL, LLAMA} and by_model[LLAMA]["completion_tokens"] == 0
    by_status = {row["status"] for row in usage(contract="metered", by="status")}
    assert by_status == {"ok", "error"}
    (day,) = usage(contract="metered", by="day", since="yesterday")
    assert len(day["day"]) == 10 and day["requests"] == 2
    (hour,) = usage(contract="metered", by="hour", since="7d")
    assert hour["hour"].endswith(":00:00") and hour["requests"] == 2
    assert {r["key"] for r in usage(contract="metered", by="key")} == {key[:12]}
    (before,) = usage(contract="metered", until="yesterday")
    assert before["requests"] == 0

    exported = admin.get("/usage", params={"contract": "metered", "by": "model", "format": "csv"})
    assert exported.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert {r["model"] for r in rows} == {DEMO_MODEL, LLAMA}

    bad = _error(admin.get("/usage", params={"since": "last tuesday"}), 400)
    assert bad["param"] == "since" and "7d" in bad["message"]
    assert _error(admin.get("/usage", params={"by": "week"}), 400)["param"] == "by"
    assert _error(admin.get("/usage", params={"contract": "nobody"}), 404)


# Backends and status ---------------------------------------------------------------------
def test_backends_show_engines_and_replicas(admin_hub):
    _, admin, _, _ = admin_hub
    rows = {row["model"]: row for row in admin.get("/backends").json()["data"]}
    demo = rows[DEMO_MODEL]
    assert demo["engine"] == "llama.cpp" and demo["ready"] is True and demo["slots"] == 8
    assert demo["replicas"] == []
    llama = rows[LLAMA]
    assert llama["engine"] == "upstream" and llama["ready"] is False
    (replica,) = llama["replicas"]
    assert replica["url"].startswith("http://127.0.0.1:") and replica["healthy"] is False
    assert rows[MISTRAL]["engine"] is None and rows[MISTRAL]["ready"] is False


def test_status_has_live_figures(admin_hub):
    server, admin, _, tenant_key = admin_hub
    assert _chat(server, tenant_key, max_tokens=8).status_code == 200
    rows = {row["model"]: row for row in admin.get("/status").json()["data"]}
    demo = rows[DEMO_MODEL]
    assert demo["slots"] == 8 and 0 <= demo["running"] <= 8 and demo["queued"] == 0
    assert 0 <= demo["kv_cache_usage"] <= 1
    assert demo["ttft_p50_s"] > 0 and demo["tpot_p50_s"] > 0
    assert demo["requests"] >= 1
    assert rows[LLAMA]["kv_cache_usage"] is None


# Documentation ---------------------------------------------------------------------------
def test_openapi_documents_the_admin_api_and_docs_are_served(admin_hub):
    server, _, _, _ = admin_hub
    spec = httpx.get(server.base_url + "/openapi.json").json()
    admin_paths = {p for p in spec["paths"] if p.startswith("/admin/v1/")}
    assert admin_paths >= {
        "/admin/v1/contracts",
        "/admin/v1/contracts/{name}",
        "/admin/v1/contracts/{name}/suspend",
        "/admin/v1/contracts/{name}/resume",
        "/admin/v1/contracts/{name}/keys",
        "/admin/v1/keys/{ref}",
        "/admin/v1/keys/{ref}/rotate",
        "/admin/v1/usage",
        "/admin/v1/backends",
        "/admin/v1/status",
    }
    for path in admin_paths:
        for operation in spec["paths"][path].values():
            assert operation["tags"] == ["admin"], path
    assert "ContractOut" in spec["components"]["schemas"]
    docs = httpx.get(server.base_url + "/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


def test_admin_api_is_open_with_auth_off(demo_server):
    r = httpx.get(demo_server.base_url + "/admin/v1/contracts")
    assert r.status_code == 200 and r.json() == {"data": []}
    # No contract exists with auth off: usage is the anonymous requests.
    assert httpx.get(demo_server.base_url + "/admin/v1/usage").status_code == 200
