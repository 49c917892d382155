"""Contracts, keys and authentication on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import event, select, text

from modelhub.errors import (
    AuthenticationError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
)
from modelhub.platform import ANONYMOUS, Limits, Platform, Price
from modelhub.platform import keys as key_material
from modelhub.platform.tables import api_keys
from tests.conftest import make_settings


@contextmanager
def _statements(platform: Platform) -> Iterator[list[str]]:
    """The SQL the platform's engine runs while the block runs."""
    engine = platform.store.engine.sync_engine
    statements: list[str] = []
    listener = lambda *args: statements.append(args[2])
    event.listen(engine, "before_cursor_execute", listener)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", listener)


async def test_contract_crud(platform: Platform):
    store = platform.store
    created = await store.create_contract(
        "acme",
        limits=Limits(rps=5, burst=10, rpm=100, tpm=50_000, max_running=4),
        model_limits={"big": Limits(rpm=5)},
        models=["small", "big"],
        prices={"big": Price(input=0.1, output=0.3)},
    )
    assert (created.status, created.limits.rpm, created.models) == ("active", 100, ("small", "big"))
    assert (await store.get_contract("acme")).limits.max_running == 4
    with pytest.raises(InvalidRequestError):
        Limits(max_running=0)
    assert created.model_limits["big"] == Limits(rpm=5)
    assert created.prices["big"] == Price(0.1, 0.3)
    with pytest.raises(InvalidRequestError):
        await store.create_contract("acme")

    await store.create_contract("beta")
    assert [c.name for c in await store.list_contracts()] == ["acme", "beta"]

    updated = await store.update_contract(
        "acme", limits=Limits(rpm=10), models=None, status="suspended"
    )
    assert (updated.limits, updated.models, updated.status) == (Limits(rpm=10), None, "suspended")
    assert updated.prices == created.prices  # what was not given stays
    with pytest.raises(NotFoundError):
        await store.update_contract("nobody", status="active")
    with pytest.raises(InvalidRequestError):
        await store.update_contract("acme", status="deleted")


async def test_keys_are_stored_only_as_hashes(platform: Platform):
    store = platform.store
    await store.create_contract("acme")
    secret, key = await store.create_key("acme", name="ci")
    assert secret.startswith("mh-") and len(secret) == 3 + 43
    assert key.prefix == secret[:12] and key.name == "ci" and key.contract_name == "acme"

    async with store.engine.connect() as conn:
        row = (await conn.execute(select(api_keys))).mappings().one()
        dump = " ".join(str(v) for v in row.values())
        everything = str((await conn.execute(text("SELECT * FROM api_keys"))).all())
    assert secret not in dump and secret not in everything
    assert secret[12:] not in everything
    assert row["key_hash"] == key_material.hash_key(secret)

    second, _ = await store.create_key("acme")
    assert second != secret
    assert [k.prefix for k in await store.list_keys("acme")] == [secret[:12], second[:12]]
    with pytest.raises(NotFoundError):
        await store.list_keys("nobody")


async def test_authentication(platform: Platform):
    store = platform.store
    await store.create_contract("acme", models=["small"], limits=Limits(rpm=7))
    secret, key = await store.create_key("acme")
    expired, _ = await store.create_key("acme", expires_at=datetime.now(UTC) - timedelta(seconds=1))
    later, _ = await store.create_key("acme", expires_at=datetime.now(UTC) + timedelta(days=1))

    who = await platform.authenticate(f"Bearer {secret}", "small")
    assert (who.contract_name, who.key_id, who.limits.rpm) == ("acme", key.id, 7)
    assert (await platform.authenticate(f"bearer  {later}", None)).contract_name == "acme"

    for header in (None, "", "Bearer", "Basic abc", f"Token {secret}"):
        with pytest.raises(AuthenticationError, match="didn't provide"):
            await platform.authenticate(header, "small")
    for wrong in ("mh-unknown", secret[:-1] + ("A" if secret[-1] != "A" else "B"), secret[:12]):
        with pytest.raises(AuthenticationError, match="Incorrect") as caught:
            await platform.authenticate(f"Bearer {wrong}", "small")
        assert wrong not in caught.value.message and caught.value.status_code == 401
    with pytest.raises(AuthenticationError, match="expired"):
        await platform.authenticate(f"Bearer {expired}", "small")

    with pytest.raises(PermissionDeniedError, match="does not include") as caught:
        await platform.authenticate(f"Bearer {secret}", "big")
    assert caught.value.status_code == 403

    await store.revoke_key(key.prefix)
    with pytest.raises(AuthenticationError, match="revoked"):
        await platform.authenticate(f"Bearer {secret}", "small")

    await store.update_contract("acme", status="suspended")
    with pytest.raises(PermissionDeniedError, match="suspended"):
        await platform.authenticate(f"Bearer {later}", "small")
    await store.update_contract("acme", status="active")
    assert (await platform.authenticate(f"Bearer {later}", "small")).key_id is not None


async def test_key_hashes_compared_in_constant_time(platform: Platform, monkeypatch):
    await platform.store.create_contract("acme")
    secret, _ = await platform.store.create_key("acme")
    compared = []
    real = key_material.hmac.compare_digest

    def spy(a, b):
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(key_material.hmac, "compare_digest", spy)
    await platform.authenticate(f"Bearer {secret}", None)
    assert compared == [(key_material.hash_key(secret).encode(),) * 2]


async def test_revoke_by_id_and_ambiguity(platform: Platform):
    await platform.store.create_contract("acme")
    _, key = await platform.store.create_key("acme")
    revoked = await platform.store.revoke_key(key.id)
    assert revoked.revoked_at is not None
    assert (await platform.store.revoke_key(key.id)).revoked_at == revoked.revoked_at
    with pytest.raises(NotFoundError):
        await platform.store.revoke_key(10_000)


async def test_bootstrap_once(platform: Platform):
    key = await platform.bootstrap()
    assert key is not None and key.startswith("mh-")
    assert (await platform.authenticate(f"Bearer {key}", "any")).contract_name == "default"
    assert await platform.bootstrap() is None


async def test_auth_off(tmp_path, database_url):
    platform = await Platform.open(
        make_settings(tmp_path, auth=False, database_url=database_url, auth_cache_ttl_s=0)
    )
    try:
        assert await platform.authenticate(None, "any") is ANONYMOUS
        assert await platform.bootstrap() is None
        assert await platform.store.count_contracts() == 0
    finally:
        await platform.close()


async def test_migrations_are_idempotent(tmp_path, database_url):
    for _ in range(2):
        platform = await Platform.open(
            make_settings(tmp_path, auth=True, database_url=database_url, auth_cache_ttl_s=0)
        )
        await platform.close()


async def test_a_keys_last_use_is_written_after_the_request_in_one_batch(platform: Platform):
    """Inside the request it was a write transaction for every key used less than once a
    minute; now uses are noted, and written together by the next flush."""
    store = platform.store
    await store.create_contract("acme")
    secrets = [(await store.create_key("acme"))[0] for _ in range(3)]
    with _statements(platform) as statements:
        for secret in secrets:
            await platform.authenticate(f"Bearer {secret}", None)
        assert not [s for s in statements if s.lstrip().upper().startswith("UPDATE")]
        assert [k.last_used_at for k in await store.list_keys("acme")] == [None] * 3
        await platform.flush()
    assert all(k.last_used_at is not None for k in await store.list_keys("acme"))
    assert len([s for s in statements if "UPDATE api_keys" in s]) == 1


async def test_key_lookups_are_cached_for_the_ttl(platform: Platform, clock):
    from modelhub.platform.auth import Authenticator
    from modelhub.platform.key_use import KeyUse

    store = platform.store
    await store.create_contract("cached")
    secret, key = await store.create_key("cached")
    auth = Authenticator(store, KeyUse(store), enabled=True, clock=clock, cache_ttl_s=1.0)
    assert (await auth.authenticate(f"Bearer {secret}", None)).key_id == key.id
    await store.revoke_key(key.prefix)
    # Within the TTL the cached lookup still answers; after it, the revocation holds.
    assert (await auth.authenticate(f"Bearer {secret}", None)).key_id == key.id
    clock.advance(1.01)
    with pytest.raises(AuthenticationError, match="revoked"):
        await auth.authenticate(f"Bearer {secret}", None)
    with pytest.raises(AuthenticationError, match="Incorrect"):
        await auth.authenticate("Bearer mh-unknown-key", None)
    assert len(auth._cache._entries) == 1  # unknown keys are not kept


async def test_cached_keys_cost_no_query_until_keys_or_contracts_change(platform: Platform, clock):
    """Past the TTL a gateway reads only the auth revision; a suspension bumps it, so
    every cached key of every contract is looked up again."""
    from modelhub.platform.auth import Authenticator
    from modelhub.platform.key_use import KeyUse

    store = platform.store
    await store.create_contract("steady")
    secrets = [(await store.create_key("steady"))[0] for _ in range(3)]
    auth = Authenticator(store, KeyUse(store), enabled=True, clock=clock, cache_ttl_s=1.0)
    for secret in secrets:
        await auth.authenticate(f"Bearer {secret}", None)  # looked up, last use noted

    with _statements(platform) as statements:
        for _ in range(3):
            clock.advance(1.01)
            for secret in secrets:
                await auth.authenticate(f"Bearer {secret}", None)
        assert len(statements) == 3, statements  # one revision read per TTL, nothing else
        assert all("auth_revision" in s for s in statements)

        await store.update_contract("steady", status="suspended")
        # Within the TTL the cached entry still answers; after it, the suspension holds.
        assert (await auth.authenticate(f"Bearer {secrets[0]}", None)).contract_name == "steady"
        clock.advance(1.01)
        for secret in secrets:
            with pytest.raises(PermissionDeniedError, match="suspended"):
                await auth.authenticate(f"Bearer {secret}", None)
