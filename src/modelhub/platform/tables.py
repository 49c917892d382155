"""The platform's tables: contracts, their API keys, the usage ledger, and admin tokens.

Times are stored as naive UTC (``TIMESTAMP WITHOUT TIME ZONE``) so SQLite and
PostgreSQL hold and group them the same way; ``db.to_utc`` / ``db.from_utc`` convert.
Costs are integer nano-units of the price currency: sums stay exact.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
)

__all__ = ["admin_tokens", "api_keys", "auth_revision", "contracts", "metadata", "usage"]

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

contracts = Table(
    "contracts",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(100), nullable=False, unique=True),
    Column("status", String(16), nullable=False),
    # {"rps", "burst", "rpm", "tpm"}; a missing or null entry is no limit.
    Column("limits", JSON, nullable=False),
    # {model: limits} on top of the contract-wide ones.
    Column("model_limits", JSON, nullable=False),
    # null: every model; a list: only these.
    Column("models", JSON, nullable=True),
    # {model: {"input": per 1M tokens, "output": per 1M tokens}}
    Column("prices", JSON, nullable=False),
    Column("created_at", DateTime, nullable=False),
    Column("updated_at", DateTime, nullable=False),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("contract_id", Integer, ForeignKey("contracts.id"), nullable=False, index=True),
    Column("name", String(100), nullable=True),
    # The first characters of the key: shown in lists, and the index a key is looked up by.
    Column("prefix", String(16), nullable=False, index=True),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("created_at", DateTime, nullable=False),
    Column("last_used_at", DateTime, nullable=True),
    Column("revoked_at", DateTime, nullable=True),
    Column("expires_at", DateTime, nullable=True),
)

usage = Table(
    "usage",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("request_id", String(64), nullable=False, unique=True),
    # Null when auth is off.
    Column("contract_id", Integer, ForeignKey("contracts.id"), nullable=True),
    Column("key_id", Integer, ForeignKey("api_keys.id"), nullable=True),
    Column("model", String(200), nullable=False),
    Column("received_at", DateTime, nullable=False),
    Column("first_token_at", DateTime, nullable=True),
    Column("finished_at", DateTime, nullable=False),
    Column("prompt_tokens", Integer, nullable=False),
    Column("image_tokens", Integer, nullable=False),
    Column("completion_tokens", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("finish_reason", String(32), nullable=True),
    Column("cost_nanos", BigInteger, nullable=False),
    Index("ix_usage_contract_received", "contract_id", "received_at"),
)

# Tokens of the admin API (/admin/v1): apart from tenant keys, so no tenant key can ever
# manage the hub. Stored as API keys are: a hash and a display prefix.
admin_tokens = Table(
    "admin_tokens",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(100), nullable=False),
    Column("prefix", String(16), nullable=False, index=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("created_at", DateTime, nullable=False),
    Column("last_used_at", DateTime, nullable=True),
    Column("revoked_at", DateTime, nullable=True),
)

# One row, bumped in the same transaction as any change that can turn an accepted key
# away (a revocation, a contract's status, models or limits): gateways keep their key
# cache for as long as it is unchanged, and look at it once per auth_cache_ttl_s.
auth_revision = Table(
    "auth_revision",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("revision", BigInteger().with_variant(Integer, "sqlite"), nullable=False),
)
