"""Contracts and their API keys: the types, and their storage.

A contract is who pays: its limits, model allow-list and prices apply to all of its
keys together. Keys are stored as hashes (see ``keys``); the plaintext leaves
``create_key`` once and is never stored or logged.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from typing import Literal

from sqlalchemy import bindparam, func, insert, or_, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from modelhub.errors import InvalidRequestError, NotFoundError
from modelhub.platform import keys
from modelhub.platform.db import from_db, to_db, utcnow
from modelhub.platform.tables import api_keys, auth_revision, contracts

__all__ = ["ApiKey", "Contract", "ContractStore", "Limits", "Price", "Status"]

Status = Literal["active", "suspended"]
_UNSET = object()


@dataclass(frozen=True)
class Limits:
    """Rate limits; ``None`` is no limit. ``burst`` is how many requests may arrive at
    once under ``rps`` (default: ``rps`` rounded up). ``max_running`` caps the contract's
    sequences running at once on an engine (None: the engine's default)."""

    rps: float | None = None
    burst: int | None = None
    rpm: int | None = None
    tpm: int | None = None
    # Sequences of this contract an engine runs at once (None: the engine's default).
    max_running: int | None = None

    def __post_init__(self) -> None:
        for name in ("rps", "burst", "rpm", "tpm", "max_running"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise InvalidRequestError(f"limit {name} must be positive, got {value}")

    @property
    def effective_burst(self) -> int | None:
        if self.rps is None:
            return None
        return self.burst or max(1, math.ceil(self.rps))

    def divided(self, gateways: int) -> Limits:
        """This gateway's share when ``gateways`` enforce the limits apart (rounded up, so a
        small limit still lets requests through)."""
        if gateways == 1:
            return self
        share = {"rps": self.rps / gateways if self.rps is not None else None}
        for name in ("burst", "rpm", "tpm"):
            value = getattr(self, name)
            share[name] = None if value is None else math.ceil(value / gateways)
        return replace(self, **share)

    def to_json(self) -> dict:
        return {name: value for name, value in asdict(self).items() if value is not None}

    @classmethod
    def from_json(cls, data: Mapping | None) -> Limits:
        return cls(**(data or {}))


@dataclass(frozen=True)
class Price:
    """Per one million tokens, in the operator's currency."""

    input: float
    output: float

    def cost_nanos(self, prompt_tokens: int, completion_tokens: int) -> int:
        # Nano-units: a price per 1M tokens times a token count, times 1e9 / 1e6.
        return round((prompt_tokens * self.input + completion_tokens * self.output) * 1000)


@dataclass(frozen=True)
class Contract:
    id: int
    name: str
    status: Status
    limits: Limits = field(default_factory=Limits)
    model_limits: Mapping[str, Limits] = field(default_factory=dict)
    models: tuple[str, ...] | None = None
    prices: Mapping[str, Price] = field(default_factory=dict)
    created_at: datetime | None = None
    updated_at: datetime | None = None

    @classmethod
    def from_row(cls, row: RowMapping) -> Contract:
        return cls(
            id=row["id"],
            name=row["name"],
            status=row["status"],
            limits=Limits.from_json(row["limits"]),
            model_limits={m: Limits.from_json(v) for m, v in row["model_limits"].items()},
            models=None if row["models"] is None else tuple(row["models"]),
            prices={m: Price(**v) for m, v in row["prices"].items()},
            created_at=from_db(row["created_at"]),
            updated_at=from_db(row["updated_at"]),
        )


@dataclass(frozen=True)
class ApiKey:
    """A key as lists show it: never the key itself, only its first characters."""

    id: int
    contract_id: int
    contract_name: str
    name: str | None
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None
    expires_at: datetime | None

    @classmethod
    def from_row(cls, row: RowMapping) -> ApiKey:
        return cls(
            id=row["id"],
            contract_id=row["contract_id"],
            contract_name=row["contract_name"],
            name=row["name"],
            prefix=row["prefix"],
            created_at=from_db(row["created_at"]),
            last_used_at=from_db(row["last_used_at"]),
            revoked_at=from_db(row["revoked_at"]),
            expires_at=from_db(row["expires_at"]),
        )


_KEY_COLUMNS = (*api_keys.c, contracts.c.name.label("contract_name"))
# A key's contract in the same row (``find_key``), apart from the key's own columns.
_OWNER_COLUMNS = tuple(c.label(f"contract__{c.name}") for c in contracts.c)


class ContractStore:
    """Contracts and keys in the database."""

    def __init__(self, engine: AsyncEngine):
        self._engine = engine

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    # Contracts ---------------------------------------------------------------------------
    async def create_contract(
        self,
        name: str,
        *,
        limits: Limits | None = None,
        model_limits: Mapping[str, Limits] | None = None,
        models: list[str] | tuple[str, ...] | None = None,
        prices: Mapping[str, Price] | None = None,
    ) -> Contract:
        now = to_db(utcnow())
        values = {
            "name": name,
            "status": "active",
            "limits": (limits or Limits()).to_json(),
            "model_limits": {m: v.to_json() for m, v in (model_limits or {}).items()},
            "models": None if models is None else list(models),
            "prices": {m: asdict(p) for m, p in (prices or {}).items()},
            "created_at": now,
            "updated_at": now,
        }
        try:
            async with self._engine.begin() as conn:
                await conn.execute(insert(contracts).values(values))
        except IntegrityError:
            raise InvalidRequestError(f"a contract named {name!r} already exists") from None
        return await self.get_contract(name)

    async def get_contract(self, name: str) -> Contract:
        async with self._engine.connect() as conn:
            row = (
                (await conn.execute(select(contracts).where(contracts.c.name == name)))
                .mappings()
                .first()
            )
        if row is None:
            raise NotFoundError(f"no contract named {name!r}")
        return Contract.from_row(row)

    async def list_contracts(self) -> list[Contract]:
        async with self._engine.connect() as conn:
            rows = (await conn.execute(select(contracts).order_by(contracts.c.name))).mappings()
            return [Contract.from_row(row) for row in rows]

    async def count_contracts(self) -> int:
        async with self._engine.connect() as conn:
            return (await conn.execute(select(func.count()).select_from(contracts))).scalar_one()

    async def update_contract(
        self,
        name: str,
        *,
        status: Status | None = None,
        limits: Limits | None = None,
        model_limits: Mapping[str, Limits] | None = None,
        models=_UNSET,
        prices: Mapping[str, Price] | None = None,
    ) -> Contract:
        """Change what is given; ``models=None`` opens the contract to every model."""
        if status is not None and status not in ("active", "suspended"):
            raise InvalidRequestError(f"status must be active or suspended, not {status!r}")
        values: dict = {"updated_at": to_db(utcnow())}
        if status is not None:
            values["status"] = status
        if limits is not None:
            values["limits"] = limits.to_json()
        if model_limits is not None:
            values["model_limits"] = {m: v.to_json() for m, v in model_limits.items()}
        if models is not _UNSET:
            values["models"] = None if models is None else list(models)
        if prices is not None:
            values["prices"] = {m: asdict(p) for m, p in prices.items()}
        async with self._engine.begin() as conn:
            result = await conn.execute(
                update(contracts).where(contracts.c.name == name).values(values)
            )
            await _bump_auth_revision(conn)
        if result.rowcount == 0:
            raise NotFoundError(f"no contract named {name!r}")
        return await self.get_contract(name)

    # Keys --------------------------------------------------------------------------------
    async def create_key(
        self, contract: str, *, name: str | None = None, expires_at: datetime | None = None
    ) -> tuple[str, ApiKey]:
        """A new key for ``contract``: the plaintext (to show once) and its stored record."""
        owner = await self.get_contract(contract)
        secret = keys.generate_key()
        async with self._engine.begin() as conn:
            key_id = (
                await conn.execute(
                    insert(api_keys)
                    .values(
                        contract_id=owner.id,
                        name=name,
                        prefix=keys.display_prefix(secret),
                        key_hash=keys.hash_key(secret),
                        created_at=to_db(utcnow()),
                        expires_at=to_db(expires_at),
                    )
                    .returning(api_keys.c.id)
                )
            ).scalar_one()
        return secret, await self._key_by_id(key_id)

    async def list_keys(self, contract: str | None = None) -> list[ApiKey]:
        query = select(*_KEY_COLUMNS).join(contracts).order_by(api_keys.c.id)
        if contract is not None:
            await self.get_contract(contract)  # an unknown name is an error, not an empty list
            query = query.where(contracts.c.name == contract)
        async with self._engine.connect() as conn:
            return [ApiKey.from_row(row) for row in (await conn.execute(query)).mappings()]

    async def revoke_key(self, ref: int | str) -> ApiKey:
        """Revoke by id, display prefix or the key itself; revoking twice keeps the first time."""
        async with self._engine.begin() as conn:
            key_id = await self._resolve_key(conn, ref)
            await conn.execute(
                update(api_keys)
                .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=to_db(utcnow()))
            )
            await _bump_auth_revision(conn)
        return await self._key_by_id(key_id)

    async def rotate_key(self, ref: int | str) -> tuple[str, ApiKey]:
        """A new key with the old one's contract, name and expiry; the old one is revoked
        in the same transaction."""
        async with self._engine.begin() as conn:
            key_id = await self._resolve_key(conn, ref)
            old = (
                (await conn.execute(select(api_keys).where(api_keys.c.id == key_id)))
                .mappings()
                .one()
            )
            if old["revoked_at"] is not None:
                raise InvalidRequestError(f"key {old['prefix']} is revoked; create a new one")
            now = to_db(utcnow())
            secret = keys.generate_key()
            new_id = (
                await conn.execute(
                    insert(api_keys)
                    .values(
                        contract_id=old["contract_id"],
                        name=old["name"],
                        prefix=keys.display_prefix(secret),
                        key_hash=keys.hash_key(secret),
                        created_at=now,
                        expires_at=old["expires_at"],
                    )
                    .returning(api_keys.c.id)
                )
            ).scalar_one()
            await conn.execute(
                update(api_keys).where(api_keys.c.id == key_id).values(revoked_at=now)
            )
            await _bump_auth_revision(conn)
        return secret, await self._key_by_id(new_id)

    @staticmethod
    async def _resolve_key(conn, ref: int | str) -> int:
        """The id of the one key ``ref`` names: an id, a display prefix, or the whole key."""
        named = keys.named_by(ref, api_keys, "key_hash")
        ids = (await conn.execute(select(api_keys.c.id).where(named))).scalars().all()
        if len(ids) != 1:
            # A whole key is never echoed back: show only its display prefix.
            shown = keys.display_prefix(str(ref))
            raise NotFoundError(
                f"no key {shown!r}" if not ids else f"{shown!r} names several keys; use the id"
            )
        return ids[0]

    async def find_key(self, secret: str) -> tuple[ApiKey, Contract] | None:
        """The key whose hash matches ``secret`` and its contract, or None."""
        query = (
            select(*_KEY_COLUMNS, api_keys.c.key_hash, *_OWNER_COLUMNS)
            .join(contracts)
            .where(api_keys.c.prefix == keys.display_prefix(secret))
        )
        async with self._engine.connect() as conn:
            candidates = (await conn.execute(query)).mappings().all()
        match = next((r for r in candidates if keys.hashes_match(secret, r["key_hash"])), None)
        if match is None:
            return None
        owner = {c.name: match[f"contract__{c.name}"] for c in contracts.c}
        return ApiKey.from_row(match), Contract.from_row(owner)

    async def auth_revision(self) -> int:
        """Bumped by every change that can turn an accepted key away."""
        async with self._engine.connect() as conn:
            found = await conn.execute(select(auth_revision.c.revision))
            return found.scalar() or 0

    async def touch_keys(self, uses: Mapping[int, datetime]) -> None:
        """Each key's last use, in one transaction; never earlier than one written already
        (another gateway may have written a later use)."""
        when = bindparam("used_at")
        statement = (
            update(api_keys)
            .where(api_keys.c.id == bindparam("key_id"))
            .where(or_(api_keys.c.last_used_at.is_(None), api_keys.c.last_used_at < when))
            .values(last_used_at=when)
        )
        async with self._engine.begin() as conn:
            await conn.execute(
                statement, [{"key_id": key, "used_at": to_db(at)} for key, at in uses.items()]
            )

    async def _key_by_id(self, key_id: int) -> ApiKey:
        query = select(*_KEY_COLUMNS).join(contracts).where(api_keys.c.id == key_id)
        async with self._engine.connect() as conn:
            return ApiKey.from_row((await conn.execute(query)).mappings().one())


async def _bump_auth_revision(conn) -> None:
    await conn.execute(update(auth_revision).values(revision=auth_revision.c.revision + 1))
