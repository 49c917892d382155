"""The set of model cards the hub serves, and the lifecycle rules applied on each request."""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path

from modelhub.catalog.card import Backend, ModelCard
from modelhub.errors import ModelNotFoundError, ModelNotLaunchedError, ModelRetiredError
from modelhub.settings import BackendConfig

__all__ = ["Catalog", "Clock", "load_cards"]

Clock = Callable[[], datetime]


def _utc_now() -> datetime:
    return datetime.now(UTC)


def load_cards(directory: Path) -> list[ModelCard]:
    cards = []
    for path in sorted(directory.glob("*.toml")):
        with path.open("rb") as f:
            data = tomllib.load(f)
        try:
            cards.append(ModelCard.model_validate(data))
        except ValueError as exc:
            raise ValueError(f"invalid model card {path}: {exc}") from exc
    ids = [c.id for c in cards]
    duplicates = {i for i in ids if ids.count(i) > 1}
    if duplicates:
        raise ValueError(f"model ids defined twice in {directory}: {sorted(duplicates)}")
    return cards


def _with_operator_backend(card: ModelCard, override: BackendConfig | None) -> ModelCard:
    if override is None:
        return card
    backend = Backend(
        gguf=str(override.gguf) if override.gguf else None,
        mmproj=override.mmproj,
        tokenizer=override.tokenizer,
        upstreams=tuple(override.upstreams),
        served_model_name=override.served_model_name,
        chat_template=override.chat_template or card.backend.chat_template,
    )
    return card.model_copy(update={"backend": backend})


class Catalog:
    def __init__(
        self,
        cards: list[ModelCard],
        *,
        backends: dict[str, BackendConfig] | None = None,
        clock: Clock = _utc_now,
    ) -> None:
        backends = backends or {}
        unknown = set(backends) - {c.id for c in cards}
        if unknown:
            raise ValueError(
                f"backends configured for models not in the catalog: {sorted(unknown)}"
            )
        self._cards = {c.id: _with_operator_backend(c, backends.get(c.id)) for c in cards}
        self._clock = clock

    def __iter__(self) -> Iterator[ModelCard]:
        return iter(self._cards.values())

    def now(self) -> datetime:
        return self._clock()

    def get(self, model_id: str) -> ModelCard:
        card = self._cards.get(model_id)
        if card is None:
            listed = ", ".join(sorted(self._cards))
            raise ModelNotFoundError(
                f"The model '{model_id}' does not exist. Available models: {listed}.",
                param="model",
            )
        return card

    def check_lifecycle(self, card: ModelCard) -> dict[str, str]:
        """Refuse a model before launch (404) or after end of life (410); inside the
        deprecation window, return the headers that say so (RFC 9745 Deprecation, RFC 8594
        Sunset, and Links to the alternative and successor)."""
        life = card.lifecycle
        stage = life.stage(self._clock())
        if stage == "upcoming":
            raise ModelNotLaunchedError(
                f"The model '{card.id}' is not yet available; it launches on "
                f"{life.launch.isoformat()}.",
                param="model",
            )
        if stage == "retired":
            raise ModelRetiredError(self._retired_message(card), param="model")
        if stage == "active":
            return {}
        sunset = life.sunset_at
        headers = {
            "Deprecation": f"@{int(sunset.timestamp())}",
            "Sunset": format_datetime(sunset, usegmt=True),
        }
        links = []
        if life.alternative:
            links.append(f'</v1/models/{life.alternative}>; rel="alternate"')
        if life.successor:
            links.append(f'</v1/models/{life.successor}>; rel="successor-version"')
        if links:
            headers["Link"] = ", ".join(links)
        return headers

    @staticmethod
    def _retired_message(card: ModelCard) -> str:
        life = card.lifecycle
        parts = [f"The model '{card.id}' reached its end of life on {life.end_of_life}."]
        if life.successor:
            parts.append(f"Its successor is '{life.successor}'.")
        if life.alternative:
            parts.append(f"An alternative is '{life.alternative}'.")
        if not (life.successor or life.alternative):
            parts.append("It has no successor or alternative.")
        return " ".join(parts)
