"""All of modelhub's configuration, in one typed object (env prefix ``MODELHUB_``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["BackendConfig", "ContractLimits", "Settings", "default_catalog_dir"]


def default_catalog_dir() -> Path:
    """``models/`` at the repository root, where a source checkout keeps the catalog."""
    return Path(__file__).resolve().parents[2] / "models"


class BackendConfig(BaseModel):
    """Where an operator says a catalog model is served (overrides the catalog file).

    Exactly one of ``gguf`` (embedded llama.cpp) or ``upstreams`` (OpenAI-compatible
    servers such as vLLM) is set.
    """

    gguf: Path | None = None
    mmproj: Path | None = None
    tokenizer: Path | None = Field(
        default=None, description="tekken.json shipped with the weights (Mistral models)"
    )
    upstreams: list[str] = Field(default_factory=list)
    served_model_name: str | None = None
    chat_template: str | None = None


class ContractLimits(BaseModel):
    rps: float | None = None
    burst: int | None = None
    rpm: int | None = None
    tpm: int | None = None
    max_running: int | None = None


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="MODELHUB_", env_nested_delimiter="__", extra="ignore"
    )

    # HTTP
    host: str = "127.0.0.1"
    port: int = 8000
    max_body_bytes: int = Field(default=16 * 1024 * 1024, description="413 above this")
    log_level: str = "info"
    header_read_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="a connection that has not sent a request's whole head (request line and "
        "headers) this long after its first byte is closed",
    )
    max_header_bytes: int = Field(
        default=64 * 1024,
        ge=1024,
        description="431 for a request head (URL and headers) above this",
    )
    drain_timeout_s: float = Field(
        default=30.0,
        ge=0,
        description="on SIGTERM, requests in flight get this long to finish; streams still "
        "open then end with an error event, billed for what they received",
    )

    # Limits on a JSON schema (response_format, tool parameters) that becomes a grammar
    schema_max_repetition: int = Field(
        default=4096,
        ge=1,
        description="largest repetition bound (minLength, maxItems, a pattern's {m,n}...); the "
        "optional part (max - min) is at most 1,000 in any case, llama.cpp's parser limit",
    )
    schema_max_alternatives: int = Field(
        default=1024,
        ge=1,
        description="enum values, anyOf/oneOf branches, types and properties of a schema, added "
        "up: the sampler checks each token against each (10,000 held the decode thread 15 s)",
    )
    schema_max_depth: int = Field(default=64, ge=2, description="deepest nesting of a schema")
    schema_max_size: int = Field(
        default=100_000,
        ge=100,
        description="size of a schema, about its JSON length; the tools' schemas share it",
    )

    # Catalog: one TOML per model; operator backends by model id, e.g.
    # MODELHUB_BACKENDS='{"mistralai/Mistral-Small-24B-Instruct": {"gguf": "/m/model.gguf"}}'
    catalog_dir: Path = Field(default_factory=default_catalog_dir)
    backends: dict[str, BackendConfig] = Field(default_factory=dict)

    # Embedded engine (llama.cpp)
    engine_slots: int = Field(default=16, ge=1, description="sequences decoded together")
    engine_context: int = Field(default=8192, ge=256, description="KV cells shared by the slots")
    engine_queue: int = Field(default=64, ge=0, description="waiting requests before 503")
    engine_threads: int | None = None
    engine_batch: int = Field(default=512, ge=32, description="max tokens per decode call")
    engine_max_running_per_contract: int | None = Field(
        default=None,
        ge=1,
        description="running sequences one contract may hold while another waits "
        "(None: half the slots); a contract's own max_running overrides it",
    )
    engine_prefix_cache: bool = Field(
        default=True,
        description="reuse the KV of a shared prompt prefix across requests (system prompt, "
        "history, same image); finished sequences stay cached until their cells are needed",
    )
    engine_top_k: int = Field(
        default=1000,
        ge=0,
        description="sample among the k most likely tokens (0: all); measured 135 -> 179 tok/s "
        "at 16 sequences on the demo model's 262k vocabulary",
    )

    max_request_completion_tokens: int = Field(
        default=65_536,
        ge=1,
        description="n x max_tokens a single request may ask for (400 above it); an unset "
        "max_tokens is capped to this divided by n",
    )

    # Upstream OpenAI-compatible engines (vLLM, llama-server, another modelhub)
    upstream_connect_timeout_s: float = 3.0
    upstream_read_timeout_s: float = Field(
        default=60.0, description="longest silence from an upstream before 504"
    )
    upstream_health_interval_s: float = 2.0
    upstream_api_key: str | None = None

    # Storage and platform
    data_dir: Path = Field(default_factory=lambda: Path.cwd() / "data")
    database_url: str | None = None
    redis_url: str | None = None
    auth: bool = True
    auth_cache_ttl_s: float = Field(
        default=1.0,
        ge=0,
        description="key lookups are reused this long; revocation and suspension take "
        "effect within it (0: look up every request)",
    )
    # Limits of the ``default`` contract created on first start (one hosted hub's defaults:
    # 5 requests/s with bursts of 10); keys: rps, burst, rpm, tpm.
    default_contract_limits: ContractLimits = Field(
        default_factory=lambda: ContractLimits(rps=5, burst=10, rpm=300, tpm=1_000_000)
    )
    ledger_flush_interval_s: float = Field(
        default=0.5, gt=0, description="how often journaled rows are written to the database"
    )
    ledger_batch_size: int = Field(default=256, ge=1)
    journal_checkpoint_interval_s: float = Field(
        default=1.0,
        gt=0,
        description="a streaming request's delivered tokens are journaled at most this often; "
        "a crash bills a stream at least what it had delivered 1.25 times this long before",
    )
    journal_segment_bytes: int = Field(
        default=16 * 1024 * 1024,
        ge=4096,
        description="the ledger journal moves to a new file past this size; old files are "
        "deleted once their rows are in the database",
    )
    journal_fsync: bool = Field(
        default=True,
        description="fdatasync each group of final rows before the responses end (off: "
        "rows survive a process crash, not a power loss; saves the sync's latency)",
    )
    # Outages (README: "Outages")
    auth_stale_ttl_s: float = Field(
        default=300.0,
        ge=0,
        description="while the database is unreachable, keys looked up within this many "
        "seconds keep working; unknown keys get 503",
    )
    redis_timeout_s: float = Field(
        default=2.0, gt=0, description="connect and reply timeout of the rate-limit store"
    )
    ratelimit_redis_fallback: Literal["refuse", "local"] = Field(
        default="refuse",
        description="while Redis is unreachable: refuse limited contracts' requests (503), "
        "or limit them per process at the contract's limits divided by gateway_count",
    )
    gateway_count: int = Field(
        default=1, ge=1, description="gateways sharing the limits (for the local fallback)"
    )

    # Images
    max_images_per_request: int = 8
    max_image_bytes: int = 20 * 1024 * 1024
    max_image_pixels: int = 40_000_000
    max_request_image_pixels: int = Field(
        default=64_000_000,
        ge=1,
        description="decoded pixels of all of a request's images together, checked from their "
        "headers before any is decoded (3 bytes each in RGB)",
    )
    image_fetch_timeout_s: float = 10.0
    image_connect_timeout_s: float = 3.0
    image_fetch_allow_hosts: list[str] = Field(
        default_factory=list, description="hosts or CIDRs admitted despite being private"
    )

    # Cache for generated artefacts (e.g. the Tekken v11 tokenizer file)
    cache_dir: Path = Field(default_factory=lambda: Path.home() / ".cache" / "modelhub")

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{self.data_dir / 'modelhub.db'}"
