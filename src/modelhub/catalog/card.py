"""A model card: everything the catalog says about one model (one ``models/*.toml`` file)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "Backend",
    "Endpoints",
    "Features",
    "Lifecycle",
    "LifecycleStage",
    "Modalities",
    "ModelCard",
    "Origin",
    "Ratings",
    "Technology",
]

Rating = Literal["low", "moderate", "high"]
LifecycleStage = Literal["upcoming", "active", "deprecated", "retired"]


class _Card(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Origin(_Card):
    provider: str
    provider_url: str | None = None
    country: str
    license: str
    license_url: str | None = None
    flavor: str
    release: date


class Technology(_Card):
    context_window: int = Field(gt=0)
    parameters: str
    quantization: str
    multilingual: bool
    hugging_face: str | None = None


class Modalities(_Card):
    input: tuple[Literal["text", "image", "audio"], ...]
    output: tuple[Literal["text", "image", "audio"], ...]


class Endpoints(_Card):
    chat_completions: bool = True
    embeddings: bool = False
    image_generation: bool = False

    def supported(self) -> list[str]:
        paths = {
            "chat_completions": "/v1/chat/completions",
            "embeddings": "/v1/embeddings",
            "image_generation": "/v1/images/generations",
        }
        return [path for name, path in paths.items() if getattr(self, name)]


class Features(_Card):
    streaming: bool
    reasoning: bool
    tool_calling: bool


class Lifecycle(_Card):
    launch: date
    end_of_life: date | None = None
    alternative: str | None = None
    successor: str | None = None

    @property
    def launch_at(self) -> datetime:
        return datetime.combine(self.launch, time.min, tzinfo=UTC)

    @property
    def sunset_at(self) -> datetime | None:
        if self.end_of_life is None:
            return None
        return datetime.combine(self.end_of_life, time.min, tzinfo=UTC)

    def stage(self, now: datetime) -> LifecycleStage:
        if now < self.launch_at:
            return "upcoming"
        sunset = self.sunset_at
        if sunset is None:
            return "active"
        return "retired" if now >= sunset else "deprecated"


class Ratings(_Card):
    intelligence: Rating
    speed: Rating
    sovereignty: Rating


class Backend(_Card):
    """Where the model runs. ``gguf`` may be ``package:<module>`` for a GGUF a Python package
    ships (the demo model), a path otherwise."""

    gguf: str | None = None
    mmproj: Path | None = None
    tokenizer: Path | None = None
    upstreams: tuple[str, ...] = ()
    served_model_name: str | None = None
    # For format "template": a llama.cpp built-in template name ("llama3", "chatml", ...)
    # when the GGUF carries none.
    chat_template: str | None = None

    @property
    def kind(self) -> Literal["llamacpp", "upstream", "none"]:
        if self.gguf:
            return "llamacpp"
        if self.upstreams:
            return "upstream"
        return "none"


class ModelCard(_Card):
    id: str
    name: str
    summary: str
    description: str
    format: Literal["mistral", "plain", "template"]
    demo: bool = False
    origin: Origin
    technology: Technology
    modalities: Modalities
    endpoints: Endpoints
    features: Features
    lifecycle: Lifecycle
    ratings: Ratings
    backend: Backend = Backend()

    @property
    def owned_by(self) -> str:
        return self.id.split("/", 1)[0] if "/" in self.id else self.origin.provider

    def accepts(self, modality: str) -> bool:
        return modality in self.modalities.input
