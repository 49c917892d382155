"""Contracts, API keys, rate limits and the usage ledger.

``Platform`` is the one object the API layer holds: ``authenticate`` -> ``reserve`` ->
``begin`` (the request's journaled row) -> (inference, ``InFlight.checkpoint``) ->
``InFlight.finish`` (the final row, on disk) -> ``Reservation.commit``. A request turned
away before inference gets ``record`` instead. ``admin.add_commands`` adds the
``contracts``, ``keys`` and ``usage`` commands to the CLI.
"""

from modelhub.platform.auth import ANONYMOUS, Principal
from modelhub.platform.contracts import ApiKey, Contract, ContractStore, Limits, Price
from modelhub.platform.ledger import STATUSES, InFlight, Status, UsageRecord
from modelhub.platform.limiter import Reservation
from modelhub.platform.service import Platform, open_store
from modelhub.platform.usage import GroupBy, UsageFormat, UsageQuery, render_usage

__all__ = [
    "ANONYMOUS",
    "STATUSES",
    "ApiKey",
    "Contract",
    "ContractStore",
    "GroupBy",
    "InFlight",
    "Limits",
    "Platform",
    "Price",
    "Principal",
    "Reservation",
    "Status",
    "UsageFormat",
    "UsageQuery",
    "UsageRecord",
    "open_store",
    "render_usage",
]
