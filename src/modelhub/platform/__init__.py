"""Contracts, API keys, rate limits and the usage ledger.

``Platform`` is the one object the API layer holds: ``authenticate`` -> ``reserve`` ->
(inference) -> ``Reservation.commit`` -> ``record``. ``admin.add_commands`` adds the
``contracts``, ``keys`` and ``usage`` commands to the CLI.
"""

from modelhub.platform.auth import ANONYMOUS, Principal
from modelhub.platform.contracts import ApiKey, Contract, ContractStore, Limits, Price
from modelhub.platform.ledger import UsageRecord
from modelhub.platform.limiter import Reservation
from modelhub.platform.service import Platform, open_store
from modelhub.platform.usage import GroupBy, UsageFormat, UsageQuery, render_usage

__all__ = [
    "ANONYMOUS",
    "ApiKey",
    "Contract",
    "ContractStore",
    "GroupBy",
    "Limits",
    "Platform",
    "Price",
    "Principal",
    "Reservation",
    "UsageFormat",
    "UsageQuery",
    "UsageRecord",
    "open_store",
    "render_usage",
]
