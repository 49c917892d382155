"""Usage reports (totals by model, key, day). The CLI is tested as a process in tests/test_cli.py."""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta

import pytest

from modelhub.platform import Platform, Price, UsageQuery, render_usage
from tests.platform.test_ledger import T0, principal, row


async def test_totals_by_model_key_and_day(platform: Platform):
    first = await principal(platform, prices={"big": Price(1.0, 2.0)})
    _, second_key = await platform.store.create_key("acme")
    second = type(first)(**{**first.__dict__, "key_id": second_key.id})
    other = await principal(platform, "other")
    platform.record(row("r1", first, model="big", prompt=100, completion=10))
    platform.record(
        row("r2", first, model="small", prompt=20, completion=2, at=T0 + timedelta(days=1))
    )
    platform.record(
        row("r3", second, model="big", prompt=300, completion=30, at=T0 + timedelta(days=1))
    )
    platform.record(
        row("r4", second, model="big", prompt=0, completion=0, status="rejected", finish=None)
    )
    platform.record(row("r5", other, model="big", prompt=5000, completion=5000))

    (total,) = await platform.usage("acme")
    assert total == {
        "requests": 4,
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

    since = await platform.usage("acme", since=T0 + timedelta(hours=1))
    assert since[0]["requests"] == 2
    until = await platform.usage("acme", until=T0 + timedelta(hours=1), by="model")
    assert [(r["model"], r["requests"]) for r in until] == [("big", 2)]
    assert await platform.usage("acme", since=T0 + timedelta(days=5), by="day") == []


def test_render_formats():
    report = [
        {
            "model": "big",
            "requests": 2,
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
        "prompt_tokens",
        "image_tokens",
        "completion_tokens",
        "total_tokens",
        "cost",
    ]
    assert table[1].split() == ["big", "2", "3", "0", "4", "7", "0.500000"]
    assert render_usage([], "csv", None).startswith("requests,")


def test_usage_query_model():
    query = UsageQuery.model_validate(
        {"since": "2026-11-25T00:00:00Z", "by": "day", "format": "csv"}
    )
    assert query.since.tzinfo is not None and query.by == "day"
    with pytest.raises(ValueError):
        UsageQuery.model_validate({"by": "week"})
