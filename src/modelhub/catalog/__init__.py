"""Model catalog: cards loaded from ``models/*.toml`` and their lifecycle rules."""

from modelhub.catalog.card import (
    Backend,
    Endpoints,
    Features,
    Lifecycle,
    LifecycleStage,
    Modalities,
    ModelCard,
    Origin,
    Ratings,
    Technology,
)
from modelhub.catalog.catalog import Catalog, Clock, load_cards

__all__ = [
    "Backend",
    "Catalog",
    "Clock",
    "Endpoints",
    "Features",
    "Lifecycle",
    "LifecycleStage",
    "Modalities",
    "ModelCard",
    "Origin",
    "Ratings",
    "Technology",
    "load_cards",
]
