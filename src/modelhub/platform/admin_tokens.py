"""Admin tokens: who may use the admin API (``/admin/v1``).

Kept apart from tenant keys (their own table and ``mha-`` prefix) so that no tenant key,
however its contract is configured, can manage the hub. Stored as keys are: the SHA-256
and the display prefix; the token leaves ``create`` once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import insert, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncEngine

from modelhub.errors import NotFoundError
from modelhub.platform import keys
from modelhub.platform.db import from_db, to_db, utcnow
from modelhub.platform.tables import admin_tokens

__all__ = ["AdminToken", "AdminTokenStore"]

# last_used_at is for people reading token lists: a write per request is not worth it.
_TOUCH_EVERY = timedelta(minutes=1)


@dataclass(frozen=True)
class AdminToken:
    id: int
    name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    @classmethod
    def from_row(cls, row: RowMapping) -> AdminToken:
        return cls(
            id=row["id"],
            name=row["name"],
            prefix=row["prefix"],
            created_at=from_db(row["created_at"]),
            last_used_at=from_db(row["last_used_at"]),
            revoked_at=from_db(row["revoked_at"]),
        )


class AdminTokenStore:
    def __init__(self, engine: AsyncEngine):
        self._engine = engine

    async def create(self, name: str) -> tuple[str, AdminToken]:
        """A new token: the plaintext (to show once) and its stored record."""
        secret = keys.generate_key(keys.ADMIN_TOKEN_PREFIX)
        async with self._engine.begin() as conn:
            token_id = (
                await conn.execute(
                    insert(admin_tokens)
                    .values(
                        name=name,
                        prefix=keys.display_prefix(secret),
                        token_hash=keys.hash_key(secret),
                        created_at=to_db(utcnow()),
                    )
                    .returning(admin_tokens.c.id)
                )
            ).scalar_one()
        return secret, await self._by_id(token_id)

    async def list(self) -> list[AdminToken]:
        async with self._engine.connect() as conn:
            rows = await conn.execute(select(admin_tokens).order_by(admin_tokens.c.id))
            return [AdminToken.from_row(r) for r in rows.mappings()]

    async def revoke(self, ref: str) -> AdminToken:
        """Revoke by id, display prefix or the token itself; revoking twice keeps the first time."""
        named = keys.named_by(ref, admin_tokens, "token_hash")
        async with self._engine.begin() as conn:
            ids = (await conn.execute(select(admin_tokens.c.id).where(named))).scalars().all()
            if len(ids) != 1:
                # Never echo what may be a whole token.
                raise NotFoundError(
                    "no such admin token"
                    if not ids
                    else "that prefix names several tokens; use the id"
                )
            await conn.execute(
                update(admin_tokens)
                .where(admin_tokens.c.id == ids[0], admin_tokens.c.revoked_at.is_(None))
                .values(revoked_at=to_db(utcnow()))
            )
        return await self._by_id(ids[0])

    async def verify(self, secret: str) -> AdminToken | None:
        """The live token ``secret`` is, or None; the hash is compared in constant time."""
        query = select(admin_tokens).where(admin_tokens.c.prefix == keys.display_prefix(secret))
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        match = next((r for r in rows if keys.hashes_match(secret, r["token_hash"])), None)
        if match is None or match["revoked_at"] is not None:
            return None
        token = AdminToken.from_row(match)
        now = utcnow()
        if token.last_used_at is None or now - token.last_used_at >= _TOUCH_EVERY:
            async with self._engine.begin() as conn:
                await conn.execute(
                    update(admin_tokens)
                    .where(admin_tokens.c.id == token.id)
                    .values(last_used_at=to_db(now))
                )
        return token

    async def _by_id(self, token_id: int) -> AdminToken:
        async with self._engine.connect() as conn:
            row = (
                (await conn.execute(select(admin_tokens).where(admin_tokens.c.id == token_id)))
                .mappings()
                .one()
            )
        return AdminToken.from_row(row)
