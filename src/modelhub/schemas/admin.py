"""Admin API (``/admin/v1``) request and response bodies: pydantic only.

Requests forbid unknown fields: an operator's typo in a limit name must not pass silently.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "AdminLimits",
    "AdminPrice",
    "AdminTokenCreate",
    "AdminTokenCreated",
    "AdminTokenList",
    "AdminTokenOut",
    "BackendList",
    "BackendStatus",
    "ContractCreate",
    "ContractList",
    "ContractOut",
    "ContractPatch",
    "KeyCreate",
    "KeyCreated",
    "KeyList",
    "KeyOut",
    "ModelStatus",
    "ReplicaStatus",
    "StatusOut",
    "UsageList",
]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AdminLimits(_Request):
    """Rate limits; null (or absent) is no limit."""

    rps: float | None = Field(default=None, gt=0, description="requests per second")
    burst: int | None = Field(default=None, gt=0, description="requests at once under rps")
    rpm: int | None = Field(default=None, gt=0, description="requests per minute")
    tpm: int | None = Field(default=None, gt=0, description="tokens per minute")
    max_running: int | None = Field(
        default=None, gt=0, description="sequences an engine runs at once for the contract"
    )


class AdminPrice(_Request):
    input_per_million: float = Field(ge=0)
    output_per_million: float = Field(ge=0)


class ContractCreate(_Request):
    name: str = Field(description="letters, digits, '.', '_' and '-'; 1 to 100 characters")
    limits: AdminLimits | None = None
    model_limits: dict[str, AdminLimits] | None = Field(
        default=None, description="per-model limits on top of the contract-wide ones"
    )
    models: list[str] | None = Field(default=None, description="allow-list; null: every model")
    prices: dict[str, AdminPrice] | None = None


class ContractPatch(_Request):
    """Only the fields given change. In ``limits``, a field set to null removes that limit;
    ``models: null`` opens every model; a price or model limit set to null is removed."""

    status: Literal["active", "suspended"] | None = None
    limits: AdminLimits | None = None
    model_limits: dict[str, AdminLimits | None] | None = None
    models: list[str] | None = None
    prices: dict[str, AdminPrice | None] | None = None


class ContractOut(BaseModel):
    id: int
    name: str
    status: Literal["active", "suspended"]
    limits: AdminLimits
    model_limits: dict[str, AdminLimits]
    models: list[str] | None
    prices: dict[str, AdminPrice]
    created_at: datetime | None
    updated_at: datetime | None


class ContractList(BaseModel):
    data: list[ContractOut]


class KeyCreate(_Request):
    name: str | None = Field(default=None, max_length=100, description="a label for the key")
    expires_at: datetime | None = None


class KeyOut(BaseModel):
    id: int
    contract: str
    name: str | None
    prefix: str = Field(description="the key's first characters, as lists show it")
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None
    expires_at: datetime | None


class KeyCreated(KeyOut):
    key: str = Field(description="the key itself: shown this once, stored only as a hash")


class KeyList(BaseModel):
    data: list[KeyOut]


class UsageList(BaseModel):
    data: list[dict[str, str | int | float]] = Field(
        description="one row per group: the group field (day, hour, model, key or status), "
        "requests, prompt_tokens, image_tokens, completion_tokens, total_tokens, cost"
    )


class ReplicaStatus(BaseModel):
    url: str
    healthy: bool
    outstanding: int


class BackendStatus(BaseModel):
    model: str
    engine: str | None = Field(description="llama.cpp, upstream, or null when not served")
    ready: bool
    queued: int
    running: int
    slots: int
    replicas: list[ReplicaStatus]


class BackendList(BaseModel):
    data: list[BackendStatus]


class ModelStatus(BaseModel):
    model: str
    queued: int
    running: int
    slots: int
    kv_cache_usage: float | None = Field(description="share of KV cells in use, 0 to 1")
    ttft_p50_s: float | None = Field(description="median time to first token, since start")
    tpot_p50_s: float | None = Field(description="median time per output token, since start")
    requests: int


class StatusOut(BaseModel):
    data: list[ModelStatus]


class AdminTokenCreate(_Request):
    name: str = Field(description="who or what uses the token")


class AdminTokenOut(BaseModel):
    id: int
    name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class AdminTokenCreated(AdminTokenOut):
    token: str = Field(description="the token itself: shown this once, stored only as a hash")


class AdminTokenList(BaseModel):
    data: list[AdminTokenOut]
