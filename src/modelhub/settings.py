"""All of modelhub's configuration, in one typed object (env prefix ``MODELHUB_``).

``load_settings`` is how the commands build it: every problem becomes one line naming the
variable and the position inside it (``MODELHUB_BACKENDS["m"].gguf: ...``), raised
together as one ``ConfigurationError`` before anything is loaded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from modelhub.errors import ConfigurationError

__all__ = [
    "BackendConfig",
    "ContractLimits",
    "Settings",
    "default_catalog_dir",
    "load_settings",
]

_ENV_PREFIX = "MODELHUB_"


def default_catalog_dir() -> Path:
    """``models/`` at the repository root, where a source checkout keeps the catalog."""
    return Path(__file__).resolve().parents[2] / "models"


class BackendConfig(BaseModel):
    """Where an operator says a catalog model is served (overrides the catalog file).

    Exactly one of ``gguf`` (embedded llama.cpp) or ``upstreams`` (OpenAI-compatible
    servers such as vLLM) is set. Unknown keys are errors: a typo must not pass silently.
    """

    model_config = ConfigDict(extra="forbid")

    gguf: Path | None = Field(
        default=None, description="a GGUF file, or package:<module> for a packaged one"
    )
    mmproj: Path | None = None
    tokenizer: Path | None = Field(
        default=None, description="tekken.json shipped with the weights (Mistral models)"
    )
    upstreams: list[str] = Field(default_factory=list)
    served_model_name: str | None = None
    chat_template: str | None = None

    @field_validator("gguf", "mmproj", "tokenizer")
    @classmethod
    def _file_exists(cls, path: Path | None) -> Path | None:
        if path is None or str(path).startswith("package:"):
            return path
        if not path.expanduser().is_file():
            raise ValueError(f"no such file: {path}")
        return path

    @field_validator("upstreams")
    @classmethod
    def _urls(cls, urls: list[str]) -> list[str]:
        for url in urls:
            if not url.startswith(("http://", "https://")):
                raise ValueError(
                    f"an upstream is an http(s) URL such as http://vllm:8000/v1; got {url!r}"
                )
        return urls

    @model_validator(mode="after")
    def _one_source(self) -> BackendConfig:
        if bool(self.gguf) == bool(self.upstreams):
            raise ValueError("give exactly one of gguf (a GGUF file) or upstreams (a list of URLs)")
        return self


class ContractLimits(BaseModel):
    rps: float | None = None
    burst: int | None = None
    rpm: int | None = None
    tpm: int | None = None
    max_running: int | None = None


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=_ENV_PREFIX, env_nested_delimiter="__", extra="ignore"
    )

    # HTTP
    host: str = Field(default="127.0.0.1", description="address to listen on")
    port: int = Field(default=8000, ge=1, le=65535, description="port to listen on")
    max_body_bytes: int = Field(
        default=16 * 1024 * 1024, ge=1, description="request bodies above this get 413"
    )
    log_level: Literal["debug", "info", "warning", "error", "critical"] = Field(
        default="info", description="modelhub's log level (third-party libraries log less)"
    )
    log_format: Literal["text", "json"] = Field(
        default="text", description="text lines, or one JSON object per line"
    )
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
    gc_freeze: bool = Field(
        default=True,
        description="after startup, keep what it built out of Python's full garbage "
        "collections (gc.freeze): with it in, each took 120-145 ms, every 2 s at 16 requests "
        "in flight, and stalled them all; off for a process that starts many apps (tests)",
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
    catalog_dir: Path = Field(
        default_factory=default_catalog_dir, description="directory of model cards (*.toml)"
    )
    backends: dict[str, BackendConfig] = Field(
        default_factory=dict,
        description="JSON: per catalog model id, exactly one of gguf (with optional mmproj, "
        "tokenizer, chat_template) or upstreams (with optional served_model_name)",
    )

    # Embedded engine (llama.cpp)
    engine_slots: int = Field(default=16, ge=1, description="sequences decoded together")
    engine_context: int = Field(default=8192, ge=256, description="KV cells shared by the slots")
    engine_queue: int = Field(default=64, ge=0, description="waiting requests before 503")
    engine_threads: int | None = Field(
        default=None, ge=1, description="CPU threads of the embedded engine (default: all cores)"
    )
    engine_batch: int = Field(
        default=256,
        ge=32,
        description="max tokens per decode call, and the longest prefill chunk (chunks also "
        "end at turn boundaries, once 32 tokens long: the model's turn markup, or blank lines "
        "in plain text); a cached prefix is reused in whole "
        "chunks (measured: 2,048-token prefill at 603 tok/s with 256, 593 with 512, 505 with "
        "128)",
    )
    engine_max_running_per_contract: int | None = Field(
        default=None,
        ge=1,
        description="running sequences one contract may hold while another waits "
        "(None: half the slots); a contract's own max_running overrides it",
    )
    engine_prefix_cache: bool = Field(
        default=True,
        description="reuse the KV of a shared prompt prefix across requests (system prompt, "
        "history, same image): finished sequences' KV is kept in host memory",
    )
    engine_prefix_cache_exact: bool = Field(
        default=True,
        description="reuse a cached prefix in whole prefill chunks and never another "
        "request's decoded answer, so a greedy or seeded output is the same with and "
        "without the cache; false reuses all of it, as "
        "llama-server does (less recomputed, but near-tied choices may come out otherwise)",
    )
    engine_prefix_cache_entries: int = Field(
        default=64,
        ge=1,
        le=4096,
        description="finished sequences whose KV the prefix cache keeps in host memory",
    )
    engine_prefix_cache_mib: int = Field(
        default=2048,
        ge=1,
        description="host memory the prefix cache's entries may take, in MiB (least "
        "recently used go first); a token's KV takes 160 KiB on Mistral Small 3.2 (F16)",
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
    upstream_connect_timeout_s: float = Field(
        default=3.0, gt=0, description="connecting to an upstream, before trying another"
    )
    upstream_read_timeout_s: float = Field(
        default=60.0, description="longest silence from an upstream before 504"
    )
    upstream_health_interval_s: float = Field(
        default=2.0, gt=0, description="seconds between health checks of each upstream replica"
    )
    upstream_api_key: str | None = Field(
        default=None, description="bearer token sent to upstreams (never logged)"
    )

    # Storage and platform
    data_dir: Path = Field(
        default_factory=lambda: Path.home() / ".local" / "share" / "modelhub",
        description="the SQLite database and the ledger's journal; the same from any working "
        "directory",
    )
    database_url: str | None = Field(
        default=None,
        description="e.g. postgresql+asyncpg://user:pw@host/db (default: SQLite in data_dir)",
    )
    redis_url: str | None = Field(
        default=None,
        description="Redis for rate limits shared by gateways (default: in-process limits)",
    )
    auth: bool = Field(
        default=True, description="require API keys (and admin tokens for /admin/v1)"
    )
    auth_cache_ttl_s: float = Field(
        default=1.0,
        ge=0,
        description="how often a gateway checks whether keys or contracts changed (its key "
        "cache is kept until they do); revocation and suspension take effect within it "
        "(0: check on every request)",
    )
    # One hosted hub's defaults: 5 requests/s with bursts of 10.
    default_contract_limits: ContractLimits = Field(
        default_factory=lambda: ContractLimits(rps=5, burst=10, rpm=300, tpm=1_000_000),
        description="JSON limits (rps, burst, rpm, tpm) of the default contract made on "
        "first start",
    )
    ledger_flush_interval_s: float = Field(
        default=0.5, gt=0, description="how often journaled rows are written to the database"
    )
    ledger_batch_size: int = Field(default=256, ge=1, description="usage rows per database write")
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
    max_images_per_request: int = Field(default=8, ge=0, description="400 above this")
    max_image_bytes: int = Field(
        default=20 * 1024 * 1024, ge=1, description="largest image, encoded, in bytes"
    )
    max_image_pixels: int = Field(
        default=40_000_000, ge=1, description="largest image, decoded (decompression bombs)"
    )
    max_request_image_pixels: int = Field(
        default=64_000_000,
        ge=1,
        description="decoded pixels of all of a request's images together, checked from their "
        "headers before any is decoded (3 bytes each in RGB)",
    )
    image_fetch_timeout_s: float = Field(
        default=10.0, gt=0, description="fetching an image_url, in all"
    )
    image_connect_timeout_s: float = Field(
        default=3.0, gt=0, description="connecting to an image_url's host"
    )
    image_fetch_allow_hosts: list[str] = Field(
        default_factory=list, description="hosts or CIDRs admitted despite being private"
    )

    cache_dir: Path = Field(
        default_factory=lambda: Path.home() / ".cache" / "modelhub",
        description="generated files: assembled demo GGUF, Tekken tokenizer",
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower(cls, value):
        return value.lower() if isinstance(value, str) else value

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{self.data_dir / 'modelhub.db'}"


def load_settings(**overrides) -> Settings:
    """Settings from the environment and ``overrides`` (command-line flags); every problem
    at once in a ``ConfigurationError``, one line each."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigurationError([_problem(e) for e in exc.errors()]) from None
    except SettingsError as exc:
        raise ConfigurationError([_unparsable(exc)]) from None


def _problem(error: dict) -> str:
    field, *inside = error["loc"]
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = f"unknown key; the keys are {', '.join(BackendConfig.model_fields)}"
    where = _ENV_PREFIX + str(field).upper()
    for part in inside:
        if isinstance(part, int):
            where += f"[{part}]"
        elif part in BackendConfig.model_fields or part in ContractLimits.model_fields:
            where += f".{part}"
        else:
            where += f"[{json.dumps(part)}]"
    return f"{where}: {message}"


def _unparsable(exc: SettingsError) -> str:
    # pydantic-settings names the field in its message: 'error parsing value for field "x"'.
    field = str(exc).split('"')[1] if '"' in str(exc) else "?"
    cause = exc.__cause__
    detail = str(cause) if isinstance(cause, json.JSONDecodeError) else str(cause or exc)
    return f"{_ENV_PREFIX}{field.upper()}: not valid JSON ({detail})"
