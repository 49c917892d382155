"""From per-request records to the figures the tables print.

One run of a load level becomes a summary: throughput, and TTFT, TPOT, ITL and end-to-end
latency as mean / median / p90 / p99 in milliseconds (the set vLLM's ``benchmark_serving``
reports; percentiles interpolate linearly, as ``numpy.percentile`` does). Repetitions of
the same level become the median of each figure and its spread (min-max).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence

__all__ = ["SPREAD_KEYS", "Spread", "percentile", "spread", "summarize"]

LATENCIES = ("ttft", "tpot", "itl", "e2e")
SPREAD_KEYS = (
    "req_per_s",
    "out_tok_per_s",
    "cpu_ms_per_request",
    *(f"{m}_{s}_ms" for m in LATENCIES for s in ("mean", "p50", "p90", "p99")),
)


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (q in 0..100)."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def _describe(name: str, seconds: list[float], out: dict) -> None:
    ms = [s * 1000 for s in seconds]
    out[f"{name}_mean_ms"] = statistics.fmean(ms) if ms else None
    for q, label in ((50, "p50"), (90, "p90"), (99, "p99")):
        out[f"{name}_{label}_ms"] = percentile(ms, q)


def summarize(result: dict) -> dict:
    """One run: ``result`` is what ``bench.measure.measure`` returns."""
    records = result["records"]
    ok = [r for r in records if r["error"] is None]
    failed = [r for r in records if r["error"] is not None]
    wall = result["wall_s"]
    tokens = [
        r["completion_tokens"] if r["completion_tokens"] is not None else r["text_events"]
        for r in ok
    ]
    out: dict = {
        "completed": len(ok),
        "failed": len(failed),
        "first_error": failed[0]["error"] if failed else None,
        "wall_s": wall,
        "req_per_s": len(ok) / wall if wall else 0.0,
        "out_tokens": sum(tokens),
        "out_tok_per_s": sum(tokens) / wall if wall else 0.0,
        "cpu_ms_per_request": 1000 * result["cpu_s"] / len(ok) if ok else None,
        "rss_peak": result.get("rss_peak"),
    }
    tpot = [
        (r["e2e"] - r["ttft"]) / (n - 1)
        for r, n in zip(ok, tokens, strict=True)
        if r["ttft"] is not None and n > 1
    ]
    _describe("ttft", [r["ttft"] for r in ok if r["ttft"] is not None], out)
    _describe("tpot", tpot, out)
    _describe("itl", [gap for r in ok for gap in r["itl"]], out)
    _describe("e2e", [r["e2e"] for r in ok], out)
    return out


class Spread:
    """The median of repeated figures and their range."""

    def __init__(self, values: Iterable[float | None]):
        self.values = [v for v in values if v is not None]

    @property
    def median(self) -> float | None:
        return statistics.median(self.values) if self.values else None

    def text(self, digits: int = 1) -> str:
        if not self.values:
            return "-"
        med, low, high = self.median, min(self.values), max(self.values)
        if len(self.values) == 1:
            return f"{med:,.{digits}f}"
        return f"{med:,.{digits}f} ({low:,.{digits}f}-{high:,.{digits}f})"


def spread(runs: list[dict], key: str) -> Spread:
    return Spread(run.get(key) for run in runs)
