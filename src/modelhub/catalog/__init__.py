"""Model catalog: cards loaded from ``models/*.toml`` and their lifecycle rules."""

from modelhub.catalog.card import *
from modelhub.catalog.card import __all__ as _card_all
from modelhub.catalog.catalog import *
from modelhub.catalog.catalog import __all__ as _catalog_all

# The submodules' lists, so that a name is exported where it is defined and nowhere else.
__all__ = [*_card_all, *_catalog_all]  # noqa: PLE0604
