"""Rate limits on both backends (memory, real Redis), with a clock the tests move."""

from __future__ import annotations

import asyncio

import pytest

from modelhub.errors import RateLimitError
from modelhub.platform import Limits, Principal
from modelhub.platform.limiter import RateLimiter
from modelhub.platform.ratelimit import Bucket, decide, format_reset
from modelhub.platform.ratelimit_memory import MemoryLimiter
from modelhub.platform.ratelimit_redis import RedisLimiter

HEADERS = {
    f"x-ratelimit-{what}-{kind}"
    for what in ("limit", "remaining", "reset")
    for kind in ("requests", "tokens")
}


@pytest.fixture(params=["memory", "redis"])
async def limiter(request, clock):
    if request.param == "memory":
        backend = MemoryLimiter()
    else:
        backend = await RedisLimiter.connect(request.getfixturevalue("redis_url"))
    yield RateLimiter(backend, clock)
    await backend.close()


def principal(contract_id: int = 1, **limits) -> Principal:
    model_limits = limits.pop("model_limits", {})
    return Principal(contract_id, f"c{contract_id}", 1, Limits(**limits), model_limits)


async def attempt(limiter: RateLimiter, who: Principal, tokens: int = 1, model: str = "m"):
    try:
        return await limiter.reserve(who, model, tokens)
    except RateLimitError as error:
        return error


async def test_rpm_exact(limiter):
    who = principal(rpm=10)
    results = await asyncio.gather(*(attempt(limiter, who) for _ in range(20)))
    passed = [r for r in results if not isinstance(r, RateLimitError)]
    refused = [r for r in results if isinstance(r, RateLimitError)]
    assert len(passed) == 10 and len(refused) == 10
    assert sorted(int(r.headers["x-ratelimit-remaining-requests"]) for r in passed) == list(
        range(10)
    )
    for error in refused:
        assert error.status_code == 429 and error.code == "rate_limit_exceeded"
        assert error.headers["Retry-After"] == "6"  # one request refills every 60/10 s
        assert error.headers["x-ratelimit-limit-requests"] == "10"
        assert error.headers["x-ratelimit-remaining-requests"] == "0"
        assert error.headers["x-ratelimit-reset-requests"] == "1m0s"


async def test_rpm_refills_one_per_interval(limiter, clock):
    who = principal(rpm=10)
    for _ in range(10):
        await limiter.reserve(who, "m", 1)
    clock.advance(5.9)
    assert isinstance(await attempt(limiter, who), RateLimitError)
    clock.advance(0.1)
    assert not isinstance(await attempt(limiter, who), RateLimitError)
    assert isinstance(await attempt(limiter, who), RateLimitError)


async def test_rps_with_burst(limiter, clock):
    who = principal(rps=2, burst=5)
    outcomes = [not isinstance(await attempt(limiter, who), RateLimitError) for _ in range(8)]
    assert outcomes == [True] * 5 + [False] * 3
    clock.advance(0.5)  # one request's worth at 2/s
    assert [not isinstance(await attempt(limiter, who), RateLimitError) for _ in range(2)] == [
        True,
        False,
    ]
    clock.advance(10)  # long idle: back to a full burst, not more
    assert sum([not isinstance(await attempt(limiter, who), RateLimitError) for _ in range(7)]) == 5


async def test_tokens_reserved_then_reconciled(limiter, clock):
    who = principal(tpm=1000)
    first = await limiter.reserve(who, "m", 600)  # prompt + max_tokens
    assert first.headers["x-ratelimit-remaining-tokens"] == "400"
    refused = await attempt(limiter, who, 600)
    assert isinstance(refused, RateLimitError) and "tokens per minute" in refused.message
    await first.commit(150)  # it used far fewer than reserved
    second = await limiter.reserve(who, "m", 600)
    assert second.headers["x-ratelimit-remaining-tokens"] == "250"
    await second.release()  # failed before inference: all 600 back
    await first.commit(1)  # a second commit changes nothing
    third = await limiter.reserve(who, "m", 850)
    assert third.headers["x-ratelimit-remaining-tokens"] == "0"
    assert third.headers["x-ratelimit-reset-tokens"] == "1m0s"


async def test_commit_above_reservation_charges_more(limiter, clock):
    who = principal(tpm=1000)
    reservation = await limiter.reserve(who, "m", 100)
    await reservation.commit(700)
    assert isinstance(await attempt(limiter, who, 400), RateLimitError)
    assert not isinstance(await attempt(limiter, who, 300), RateLimitError)


async def test_headers_on_every_success(limiter, clock):
    who = principal(rpm=60, tpm=6000)
    reservation = await limiter.reserve(who, "m", 100)
    assert set(reservation.headers) == HEADERS
    assert reservation.headers == {
        "x-ratelimit-limit-requests": "60",
        "x-ratelimit-remaining-requests": "59",
        "x-ratelimit-reset-requests": "1s",
        "x-ratelimit-limit-tokens": "6000",
        "x-ratelimit-remaining-tokens": "5900",
        "x-ratelimit-reset-tokens": "1s",
    }


async def test_oversized_request_refused_without_retry(limiter):
    error = await attempt(limiter, principal(tpm=100), 101)
    assert isinstance(error, RateLimitError) and "Request too large" in error.message
    assert "Retry-After" not in error.headers


async def test_refused_request_takes_nothing(limiter, clock):
    who = principal(rpm=100, tpm=1000)
    await limiter.reserve(who, "m", 900)
    for _ in range(5):
        assert isinstance(await attempt(limiter, who, 200), RateLimitError)
    ok = await limiter.reserve(who, "m", 100)
    assert ok.headers["x-ratelimit-remaining-requests"] == "98"


async def test_per_model_limits_on_top_of_contract(limiter):
    who = principal(rpm=100, model_limits={"big": Limits(rpm=2)})
    assert [
        not isinstance(await attempt(limiter, who, model="big"), RateLimitError) for _ in range(3)
    ] == [
        True,
        True,
        False,
    ]
    error = await attempt(limiter, who, model="big")
    assert "for big" in error.message
    assert not isinstance(await attempt(limiter, who, model="small"), RateLimitError)


async def test_contracts_do_not_share_limits(limiter):
    one, two = principal(1, rpm=1), principal(2, rpm=1)
    assert not isinstance(await attempt(limiter, one), RateLimitError)
    assert not isinstance(await attempt(limiter, two), RateLimitError)
    assert isinstance(await attempt(limiter, one), RateLimitError)


async def test_unlimited_and_anonymous_need_no_counters(limiter):
    reservation = await limiter.reserve(Principal(None, "anonymous", None), "m", 10**9)
    assert reservation.headers == {}
    await reservation.commit(5)


def test_decide_is_all_or_nothing():
    buckets = [Bucket("c:rpm", "requests", 10, 60.0), Bucket("c:tpm", "tokens", 100, 60.0)]
    decision = decide(buckets, 101 - 1, [0.0, 30.0], now=0.0)  # tokens: half used
    assert not decision.allowed and decision.tats == (0.0, 30.0)
    assert decision.blocking is buckets[1] and decision.retry_after == pytest.approx(30.0)


def test_format_reset():
    assert [format_reset(s) for s in (0.0, 0.0204, 1, 1.5, 59.9999, 60, 90.25, 360)] == [
        "0ms",
        "21ms",
        "1s",
        "1.5s",
        "1m0s",
        "1m0s",
        "1m30.25s",
        "6m0s",
    ]
