"""Moments as operators type them: ``2026-11-24``, ``2026-11-24T08:00``, ``today``,
``yesterday``, ``now``, ``7d`` (seven days ago), ``12h`` (twelve hours ago). UTC unless the
text says otherwise; a day is its midnight."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from modelhub.errors import InvalidRequestError

__all__ = ["parse_moment"]

_AGO = re.compile(r"(\d{1,5})([dhm])")
_UNITS = {"d": "days", "h": "hours", "m": "minutes"}


def parse_moment(text: str, now: datetime | None = None, *, param: str = "since") -> datetime:
    now = now or datetime.now(UTC)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    spoken = text.strip().lower()
    named = {"now": now, "today": midnight, "yesterday": midnight - timedelta(days=1)}
    if spoken in named:
        return named[spoken]
    if match := _AGO.fullmatch(spoken):
        return now - timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InvalidRequestError(
            f"{param}: expected a date (2026-11-24), a time (2026-11-24T08:00), today, "
            f"yesterday, now, or an age such as 7d, 12h or 30m; got {text!r}",
            param=param,
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
