"""Checks made before any model loads: the catalog's cards and the operator's backends.

Settings check themselves (``settings.load_settings``); what needs the catalog is here.
Problems come back as lines, naming the variable or file, so ``modelhub serve`` can print
them all and exit instead of failing on the first, after other models loaded.
"""

from __future__ import annotations

import json

from modelhub.catalog import load_cards
from modelhub.errors import ConfigurationError
from modelhub.settings import Settings

__all__ = ["check_config"]


def check_config(settings: Settings) -> None:
    """Raise ``ConfigurationError`` listing every problem found."""
    try:
        cards = load_cards(settings.catalog_dir)
    except (OSError, ValueError) as exc:
        raise ConfigurationError([f"MODELHUB_CATALOG_DIR: {exc}"]) from None
    if not cards:
        raise ConfigurationError(
            [f"MODELHUB_CATALOG_DIR: no model cards (*.toml) in {settings.catalog_dir}"]
        )
    known = sorted(c.id for c in cards)
    problems = [
        f"MODELHUB_BACKENDS[{json.dumps(model)}]: not a catalog model; "
        f"the catalog has {', '.join(known)}"
        for model in settings.backends
        if model not in known
    ]
    if problems:
        raise ConfigurationError(problems)
