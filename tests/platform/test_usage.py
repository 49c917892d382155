"""Usage reports (totals by model, key, day, hour, status). The CLI is tested as a process in
tests/test_cli.py."""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta

import pytest

from modelhub.platform import STATUSES, Platform, Price, UsageQuery, render_usage
from tests.platform.test_ledger import T0, principal, row


async def test_totals_by_model_key_and_day(platform: Platform):
    first = await principal(platform, prices={"big": Price(1.0, 2.0)})
    _, second_key = await platform.store.create_key("acme")
    second = type(first)(**{**first.__dict__, "key_id": second_key.id})
    other = await principal(platform, "other")
    await platform.record(row("r1", first, model="big", prompt=100, completion=10))
    await platform.record(
        row("r2", first, model="small", prompt=20, completion=2, at=T0 + timedelta(days=1))
    )
    await platform.record(
        row("r3", second, model="big", prompt=300, completion=30, at=T0 + timedelta(days=1))
    )
    await platform.record(
        row("r4", second, model="big", prompt=0, completion=0, status="rate_limited", finish=None)
    )
    await platform.record(row("r5", other, model="big", prompt=5000, completion=5000))

    (total,) = await platform.usage("acme")
    assert total == {
        "requests": 4,
        "requests_ok": 3,
        "requests_cancelled": 0,
        "requests_error": 0,
        "requests_rate_limited": 1,
        "requests_refused": 0,
        "prompt_tokens": 420,
        "image_tokens": 0,
        "completion_tokens": 42,
        "total_tokens": 462,
        "cost": (400 * 1.0 + 40 * 2.0) / 1e6,
    }
    by_model = await platform.usage("acme", by="model")
    assert [(r["model"], r["requests"], r["total_tokens"]) for r in by_model] == [
        ("big", 3, 440),
        ("small", 1, 22),
    ]
    by_key = await platform.usage("acme", by="key")
    keys = {k.id: k.prefix for k in await platform.store.list_keys("acme")}
    assert {r["key"]: r["prompt_tokens"] for r in by_key} == {
        keys[first.key_id]: 120,
        keys[second.key_id]: 300,
    }
    by_day = await platform.usage("acme", by="day")
    assert [(r["day"], r["requests"]) for r in by_day] == [("2026-11-25", 2), ("2026-11-26", 2)]
    by_hour = await platform.usage("acme", by="hour")
    assert [(r["hour"], r["requests"]) for r in by_hour] == [
        ("2026-11-25T10:00:00", 2),
        ("2026-11-26T10:00:00", 2),
    ]

    since = await platform.usage("acme", since=T0 + timedelta(hours=1))
    assert since[0]["requests"] == 2
    until = await platform.usage("acme", until=T0 + timedelta(hours=1), by="model")
    assert [(r["model"], r["requests"]) for r in until] == [("big", 2)]
    assert await platform.usage("acme", since=T0 + timedelta(days=5), by="day") == []


async def test_by_status_splits_requests_tokens_and_cost(platform: Platform):
    who = await principal(platform, prices={"big": Price(1.0, 2.0)})
    await platform.record(row("ok", who, model="big", prompt=100, completion=10))
    await platform.record(row("cut", who, model="big", prompt=50, completion=3, status="cancelled"))
    await platform.record(row("err", who, model="big", prompt=40, completion=0, status="error"))
    for status in ("rate_limited", "refused"):
        await platform.record(
            row(status, who, model="big", prompt=0, completion=0, status=status, finish=None)
        )
    report = {r["status"]: r for r in await platform.usage("acme", by="status")}
    assert {s: (r["requests"], r["total_tokens"], r["cost"]) for s, r in report.items()} == {
        "cancelled": (1, 53, (50 + 6) / 1e6),
        "error": (1, 40, 40 / 1e6),
        "ok": (1, 110, (100 + 20) / 1e6),
        "rate_limited": (1, 0, 0.0),
        "refused": (1, 0, 0.0),
    }
    # Each status group counts only its own kind; the plain total splits them the same way.
    assert all(r[f"requests_{s}"] == 1 for s, r in report.items())
    (total,) = await platform.usage("acme")
    assert total["requests"] == 5
    assert [total[f"requests_{s}"] for s in STATUSES] == [1, 1, 1, 1, 1]


def test_render_formats():
    report = [
        {
            "model": "big",
            "requests": 2,
            "requests_ok": 1,
            "requests_cancelled": 1,
            "requests_error": 0,
            "requests_rate_limited": 0,
            "requests_refused": 0,
            "prompt_tokens": 3,
            "image_tokens": 0,
            "completion_tokens": 4,
            "total_tokens": 7,
            "cost": 0.5,
        }
    ]
    assert json.loads(render_usage(report, "json")) == report
    parsed = list(csv.DictReader(io.StringIO(render_usage(report, "csv", "model"))))
    assert parsed == [{k: str(v) for k, v in report[0].items()}]
    table = render_usage(report, "table", "model").splitlines()
    assert table[0].split() == [
        "model",
        "requests",
        "requests_ok",
        "requests_cancelled",
        "requests_error",
        "requests_rate_limited",
        "requests_refused",
        "prompt_tokens",
        "image_tokens",
        "completion_tokens",
        "total_tokens",
        "cost",
    ]
    assert table[1].split() == ["big", "2", "1", "1", "0", "0", "0", "3", "0", "4", "7", "0.500000"]
    assert render_usage([], "csv", None).startswith("requests,")


def test_usage_query_model():
    query = UsageQuery.model_validate(
        {"since": "2026-11-25T00:00:00Z", "by": "day", "format": "csv"}
    )
    assert query.since.tzinfo is not None and query.by == "day"
    with pytest.raises(ValueError):
        UsageQuery.model_validate({"by": "week"})
