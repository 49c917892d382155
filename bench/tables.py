"""The markdown tables of a run, and the issue's done-when ratios computed from it.

Every figure is the median over the repetitions; key figures carry their spread
(min-max). A ratio is computed per repetition (both servers were measured in the same
repetition, one after the other) and then summarized the same way.
"""

from __future__ import annotations

from bench.engine import TARGETS as ENGINE_TARGETS
from bench.engine import EngineResult
from bench.gateway import TARGETS as GATEWAY_TARGETS
from bench.gateway import GatewayResult
from bench.report import fmt, header, table
from bench.stats import Spread, spread

__all__ = ["engine_tables", "gateway_tables", "memory_table", "targets_table"]

ENGINE_LABELS = {
    "modelhub": "modelhub engine",
    "llama-server": "llama-server -np 16 -kvu, cache_prompt",
    "llama_cpp.server": "llama-cpp-python server",
}
GATEWAY_LABELS = {"floor": "upstream direct (floor)", "modelhub": "modelhub (auth, limits, ledger)"}


def _gateway_label(target: str) -> str:
    if target in GATEWAY_LABELS:
        return GATEWAY_LABELS[target]
    return f"LiteLLM, {target.removeprefix('litellm-')} worker(s)"


def _four(runs: list[dict], metric: str) -> str:
    cells = [spread(runs, f"{metric}_{s}_ms").median for s in ("mean", "p50", "p90", "p99")]
    return " / ".join(fmt(c, 0 if metric in ("ttft", "e2e") else 1) for c in cells)


def engine_tables(result: EngineResult) -> str:
    rows = []
    for key, by_target in result.runs.items():
        for target in ENGINE_TARGETS:
            runs = by_target.get(target)
            if not runs:
                continue
            rows.append(
                [
                    key,
                    ENGINE_LABELS[target],
                    spread(runs, "out_tok_per_s").text(1),
                    spread(runs, "req_per_s").text(2),
                    spread(runs, "ttft_p50_ms").text(0),
                    _four(runs, "ttft"),
                    _four(runs, "tpot"),
                    _four(runs, "itl"),
                    _four(runs, "e2e"),
                    f"{sum(r['completed'] for r in runs)}/{sum(r['failed'] for r in runs)}",
                ]
            )
    reps = max((len(r) for t in result.runs.values() for r in t.values()), default=0)
    return (
        header(
            f"Embedded engine (demo GGUF, token-id prompts, ignore_eos; {reps} repetitions)",
            result.versions,
            result.flags,
        )
        + "\n"
        + table(
            [
                "Workload, level",
                "Server",
                "output tok/s",
                "req/s",
                "TTFT p50 ms",
                "TTFT ms mean / p50 / p90 / p99",
                "TPOT ms mean / p50 / p90 / p99",
                "ITL ms mean / p50 / p90 / p99",
                "E2E ms mean / p50 / p90 / p99",
                "ok/failed",
            ],
            rows,
        )
        + "\nFigures: median over repetitions, (min-max) where shown. c=N: N requests (or "
        "conversations) in flight, closed loop; req/s: open-loop Poisson arrivals at that rate. "
        "TTFT includes queueing. TPOT: (E2E - TTFT) / (output tokens - 1) per request; ITL: "
        "gaps between streamed text events.\n"
    )


def _added(result: GatewayResult, level: str, target: str, key: str) -> Spread:
    runs = result.runs.get(level, {})
    return Spread(
        None if t.get(key) is None or f.get(key) is None else t[key] - f[key]
        for t, f in zip(runs.get(target, []), runs.get("floor", []), strict=False)
    )


def gateway_tables(result: GatewayResult) -> str:
    rows = []
    for level, by_target in result.runs.items():
        for target in GATEWAY_TARGETS:
            runs = by_target.get(target)
            if not runs:
                continue
            floor = target == "floor"
            rows.append(
                [
                    level,
                    _gateway_label(target),
                    spread(runs, "req_per_s").text(0),
                    spread(runs, "e2e_p50_ms").text(2),
                    "-" if floor else _added(result, level, target, "e2e_p50_ms").text(2),
                    "-" if floor else _added(result, level, target, "e2e_p90_ms").text(2),
                    "-" if floor else _added(result, level, target, "e2e_p99_ms").text(2),
                    spread(runs, "cpu_ms_per_request").text(2),
                    f"{sum(r['completed'] for r in runs)}/{sum(r['failed'] for r in runs)}",
                ]
            )
    reps = max((len(r) for t in result.runs.values() for r in t.values()), default=0)
    return (
        header(
            f"Gateway overhead (fake vLLM-like upstream; {reps} repetitions)",
            result.versions,
            result.flags,
        )
        + "\n"
        + table(
            [
                "Level",
                "Target",
                "req/s",
                "E2E p50 ms",
                "added p50 ms",
                "added p90 ms",
                "added p99 ms",
                "CPU ms / request",
                "ok/failed",
            ],
            rows,
        )
        + "\nburst: a 12-chunk reply in one write; stream-256: 256 chunks, one every 2 ms. "
        "c=N: closed loop; req/s levels: open-loop Poisson arrivals. Added: the target's "
        "percentile minus the floor's in the same repetition. CPU: the server's process tree "
        "(user + system; the floor row: the fake upstream's own).\n"
    )


def memory_table(result: GatewayResult) -> str:
    mib = 2**20
    rows = []
    for target in GATEWAY_TARGETS:
        if target not in result.rss_idle:
            continue
        runs = result.runs.get("burst c=16", {}).get(target, [])
        rows.append(
            [
                _gateway_label(target),
                fmt(result.rss_idle[target] / mib, 0),
                Spread(r["rss_peak"] / mib for r in runs if r.get("rss_peak")).text(0),
            ]
        )
    return (
        header("Gateway memory (VmRSS of the server process tree)", result.versions)
        + "\n"
        + table(["Target", "RSS idle MiB", "RSS peak MiB at burst c=16"], rows)
        + "\nIdle: after a warm-up (200 requests, or one per key where there are more keys), nothing in flight. Peak: sampled every 100 ms.\n"
    )


def _pairs(result: EngineResult, key: str, metric: str) -> Spread:
    by_target = result.runs.get(key, {})
    ours, theirs = by_target.get("modelhub", []), by_target.get("llama-server", [])
    return Spread(
        None if not t.get(metric) or o.get(metric) is None else o[metric] / t[metric]
        for o, t in zip(ours, theirs, strict=False)
    )


def targets_table(engine: EngineResult | None, gateway: GatewayResult | None) -> str:
    """Issue 13's done-when conditions, each with the measured ratio and its spread."""
    rows: list[list[str]] = []

    def row(target: str, measured: Spread, ok: bool | None, digits: int = 2) -> None:
        verdict = "-" if ok is None else ("yes" if ok else "no")
        rows.append([target, measured.text(digits), verdict])

    def check(s: Spread, limit: float, at_most: bool) -> bool | None:
        if s.median is None:
            return None
        return s.median <= limit if at_most else s.median >= limit

    if engine is not None:
        for conv in ("1 conversation", "4 conversations"):
            s = _pairs(engine, f"multiturn {conv}", "ttft_p50_ms")
            row(f"Multi-turn, {conv}: TTFT p50 vs llama-server <= 0.5x", s, check(s, 0.5, True))
        s = _pairs(engine, "multiturn 16 conversations", "out_tok_per_s")
        row("Multi-turn, 16 conversations: tok/s vs llama-server >= 1.0x", s, check(s, 1.0, False))
        s = _pairs(engine, "short c=16", "out_tok_per_s")
        row("Short, c=16: tok/s vs llama-server >= 1.0x", s, check(s, 1.0, False))
    if gateway is not None:
        level = gateway.runs.get("burst c=16", {})
        ours = level.get("modelhub", [])
        best = [
            max((r[i]["req_per_s"] for t, r in level.items() if t.startswith("litellm")), default=0)
            for i in range(len(ours))
        ]
        s = Spread(o["req_per_s"] / b if b else None for o, b in zip(ours, best, strict=False))
        row("Gateway, burst c=16: req/s vs LiteLLM's best row >= 5x", s, check(s, 5.0, False))
        s = _added(gateway, "burst c=1", "modelhub", "e2e_p50_ms")
        row("Gateway, burst c=1: added p50 <= 1 ms", s, check(s, 1.0, True))
        for label in ("burst 25 req/s", "stream-256 5 req/s"):
            s = spread(gateway.runs.get(label, {}).get("modelhub", []), "cpu_ms_per_request")
            row(f"Gateway, {label}: CPU per request <= 1 ms", s, check(s, 1.0, True))
    return (
        "### Issue 13 targets\n\n"
        + table(["Target", "Measured: median (min-max) over repetitions", "Met"], rows)
        + "\nRatios are modelhub's figure over the peer's in the same repetition.\n"
    )
