"""Usage reports from the ledger: totals for a contract (or every contract), optionally by
model, key, status, day or hour.

Every report row counts all of the group's requests *and* splits them by status
(``requests_ok``, ``requests_cancelled``, ...), so a total never hides how many requests
were rate limited or refused. Tokens and cost are what was billed: rate-limited and refused
requests bill nothing, cancelled ones what they processed.
"""

from __future__ import annotations

import csv
import enum
import io
import json
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict
from sqlalchemy import case, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from modelhub.platform.db import to_db
from modelhub.platform.ledger import STATUSES
from modelhub.platform.tables import api_keys, usage

__all__ = [
    "COLUMNS",
    "EVERY_CONTRACT",
    "GroupBy",
    "UsageFormat",
    "UsageQuery",
    "render_usage",
    "usage_report",
]

GroupBy = Literal["model", "key", "status", "day", "hour"]


class _Everyone(enum.Enum):
    EVERY_CONTRACT = "every contract"


# usage_report's contract for the admin's view: every row, anonymous ones included.
EVERY_CONTRACT = _Everyone.EVERY_CONTRACT
UsageFormat = Literal["table", "csv", "json"]

# The numbers of every report row, after its group column (if any).
COLUMNS = (
    "requests",
    *(f"requests_{status}" for status in STATUSES),
    "prompt_tokens",
    "image_tokens",
    "completion_tokens",
    "total_tokens",
    "cost",
)


class UsageQuery(BaseModel):
    """The filters of ``GET /v1/usage`` and ``modelhub usage``: times are ISO 8601, on
    ``received_at``, ``since`` inclusive and ``until`` exclusive."""

    model_config = ConfigDict(extra="forbid")

    since: datetime | None = None
    until: datetime | None = None
    by: GroupBy | None = None
    format: UsageFormat = "json"


async def usage_report(
    engine: AsyncEngine,
    contract_id: int | None | _Everyone,
    since: datetime | None = None,
    until: datetime | None = None,
    by: GroupBy | None = None,
) -> list[dict]:
    """One dict per group (a single total without ``by``), ordered by group.
    ``contract_id`` None reports the requests made with auth off; ``EVERY_CONTRACT`` all."""
    group = {
        None: None,
        "model": usage.c.model,
        # Keys show their display prefix, never anything more.
        "key": func.coalesce(api_keys.c.prefix, "-"),
        "day": func.date(usage.c.received_at),  # UTC days; date() is in both SQLite and PostgreSQL
        "hour": _hour(engine, usage.c.received_at),
        "status": usage.c.status,
    }[by]
    query = select(
        func.count().label("requests"),
        *(
            func.coalesce(func.sum(case((usage.c.status == status, 1), else_=0)), 0).label(status)
            for status in STATUSES
        ),
        func.coalesce(func.sum(usage.c.prompt_tokens), 0).label("prompt_tokens"),
        func.coalesce(func.sum(usage.c.image_tokens), 0).label("image_tokens"),
        func.coalesce(func.sum(usage.c.completion_tokens), 0).label("completion_tokens"),
        func.coalesce(func.sum(usage.c.cost_nanos), 0).label("cost_nanos"),
    )
    if contract_id is None:
        query = query.where(usage.c.contract_id.is_(None))
    elif contract_id is not EVERY_CONTRACT:
        query = query.where(usage.c.contract_id == contract_id)
    if by == "key":
        query = query.outerjoin(api_keys, api_keys.c.id == usage.c.key_id)
    if since is not None:
        query = query.where(usage.c.received_at >= to_db(since))
    if until is not None:
        query = query.where(usage.c.received_at < to_db(until))
    if group is not None:
        query = query.add_columns(group.label("group")).group_by(group).order_by(group)
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).mappings().all()
    report = []
    for row in rows:
        entry = {by: str(row["group"])} if by is not None else {}
        entry.update(
            requests=row["requests"],
            **{f"requests_{status}": int(row[status]) for status in STATUSES},
            prompt_tokens=int(row["prompt_tokens"]),
            image_tokens=int(row["image_tokens"]),
            completion_tokens=int(row["completion_tokens"]),
            total_tokens=int(row["prompt_tokens"]) + int(row["completion_tokens"]),
            cost=int(row["cost_nanos"]) / 1e9,
        )
        report.append(entry)
    return report


def _hour(engine: AsyncEngine, column):
    """The UTC hour a time falls in, as ``YYYY-MM-DDTHH:00:00`` in either database."""
    if engine.dialect.name == "postgresql":
        return func.to_char(column, 'YYYY-MM-DD"T"HH24:00:00')
    return func.strftime("%Y-%m-%dT%H:00:00", column)


def render_usage(report: list[dict], fmt: UsageFormat, by: GroupBy | None = None) -> str:
    if fmt == "json":
        return json.dumps(report, indent=2)
    header = ([by] if by else []) + list(COLUMNS)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=header, lineterminator="\n")
        writer.writeheader()
        writer.writerows(report)
        return out.getvalue()
    cells = [header] + [[_cell(row.get(c)) for c in header] for row in report]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return (
        "\n".join("  ".join(v.rjust(w) for v, w in zip(r, widths, strict=True)) for r in cells)
        + "\n"
    )


def _cell(value) -> str:
    return f"{value:.6f}" if isinstance(value, float) else str(value)
