"""Benchmark 1 (gateway overhead) and 4 (gateway memory).

A fake upstream streams a fixed reply (``bench.fake_upstream``). The same load generator,
at the same concurrency levels, drives: (a) the upstream directly (the floor), (b) modelhub
with auth, rate limits and the ledger on, the model pointed at the fake upstream by the
upstream engine, (c) LiteLLM's proxy with the same model and a master key. Each server runs
alone (the fake upstream behind it). Added latency is a target's percentile minus the
floor's at the same concurrency.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from bench.measure import measure
from bench.peers import LOOPBACK_GUARD, MAIN_PYTHON, Server, free_port, litellm_python, peer_version
from bench.report import fmt, header, package_version, ratio, table

__all__ = ["GatewayResult", "gateway_tables", "memory_table", "run_gateway"]

MODEL = "meta-llama/Llama-3.3-70B-Instruct"
# LiteLLM picks a tokenizer from the model name to count streamed tokens and downloads some
# from the Hugging Face Hub; a neutral name and ``disable_hf_tokenizer_download`` keep it on
# its bundled tiktoken files (and on loopback).
LITELLM_MODEL = "bench-70b"
CATALOG_FILE = "llama-3.3-70b-instruct.toml"
LEVELS = (1, 16, 64)
BODY = {
    "model": MODEL,
    "stream": True,
    "max_tokens": 64,
    "messages": [{"role": "user", "content": "Describe the image in one sentence."}],
}
TARGETS = ("floor", "modelhub", "litellm")
LABELS = {
    "floor": "upstream direct (floor)",
    "modelhub": "modelhub (auth, limits, ledger)",
    "litellm": "LiteLLM proxy (master key)",
}


@dataclass
class GatewayResult:
    levels: dict[str, dict[int, dict]] = field(
        default_factory=dict
    )  # target -> concurrency -> result
    rss_idle: dict[str, int] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)


def _modelhub(upstream_port: int, work: Path) -> tuple[Server, str, list[str]]:
    """modelhub serving only the 70B catalog entry (no embedded model loaded), auth on,
    with a contract whose limits are checked on every request but never reached."""
    data, catalog = work / "data", work / "catalog"
    data.mkdir()
    catalog.mkdir()
    shutil.copy(
        Path(__file__).resolve().parents[1] / "models" / CATALOG_FILE, catalog / CATALOG_FILE
    )
    env = {
        "MODELHUB_DATA_DIR": str(data),
        "MODELHUB_LOG_LEVEL": "warning",
        "MODELHUB_BACKENDS": f'{{"{MODEL}": {{"upstreams": ["http://127.0.0.1:{upstream_port}/v1"]}}}}',
    }
    cli = [str(MAIN_PYTHON.parent / "modelhub")]
    run_env = {**os.environ, **env}
    subprocess.run(
        cli
        + [
            "contracts",
            "create",
            "bench",
            "--rps",
            "1000000",
            "--burst",
            "1000000",
            "--rpm",
            "1000000000",
            "--tpm",
            "1000000000000",
        ],
        env=run_env,
        check=True,
        capture_output=True,
    )
    out = subprocess.run(
        cli + ["keys", "create", "--contract", "bench", "--name", "bench"],
        env=run_env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    key = out.strip().splitlines()[-1].strip()
    port = free_port()
    server = Server(
        "gateway-modelhub", cli + ["serve", "--port", str(port), "--catalog", str(catalog)], env=env
    )
    server.wait_http(f"http://127.0.0.1:{port}/v1/models")
    return server, f"http://127.0.0.1:{port}/v1/chat/completions", [f"authorization: Bearer {key}"]


def _litellm(upstream_port: int, work: Path) -> tuple[Server, str, list[str]]:
    """LiteLLM's proxy, one worker, no database (its keys and spend logs need PostgreSQL);
    a master key is required to start, so its auth check runs on every request."""
    python = litellm_python()
    config = work / "litellm.yaml"
    config.write_text(f"""model_list:
  - model_name: {LITELLM_MODEL}
    litellm_params:
      model: openai/{LITELLM_MODEL}
      api_base: http://127.0.0.1:{upstream_port}/v1
      api_key: fake
general_settings:
  master_key: sk-bench-master
litellm_settings:
  telemetry: false
  disable_hf_tokenizer_download: true
""")
    port = free_port()
    env = {
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_LOG": "ERROR",
        "LITELLM_TELEMETRY": "False",
        "DISABLE_SCHEMA_UPDATE": "True",
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": str(LOOPBACK_GUARD),
        "NO_DOCS": "True",
        "USE_PRISMA_MIGRATE": "False",
    }
    server = Server(
        "gateway-litellm",
        [
            str(python.parent / "litellm"),
            "--config",
            str(config),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--num_workers",
            "1",
        ],
        env=env,
    )
    server.wait_http(f"http://127.0.0.1:{port}/health/liveliness", timeout=180)
    return (
        server,
        f"http://127.0.0.1:{port}/v1/chat/completions",
        ["authorization: Bearer sk-bench-master"],
    )


def _levels(
    server: Server,
    url: str,
    headers: list[str],
    body: dict,
    levels: tuple[int, ...],
    requests: int,
    duration: float,
) -> tuple[dict[int, dict], int]:
    """Warm-up, idle RSS (warm, nothing in flight), then each level."""
    measure(server, url, [body], concurrency=4, requests=100, duration=10, headers=headers)
    time.sleep(1.0)
    idle = server.rss_bytes()
    results = {}
    for c in levels:
        results[c] = measure(
            server,
            url,
            [body],
            concurrency=c,
            requests=requests,
            duration=duration,
            headers=headers,
        )
        r = results[c]
        print(
            f"[bench] gateway {server.name} c={c}: {r['completed']} ok, {r['errors']} errors, "
            f"{r['rps']:.0f} req/s, p50 {r['latency_p50_ms']} ms"
            + (f" ({r['first_error']})" if r["errors"] else ""),
            flush=True,
        )
    return results, idle


@contextmanager
def fake_upstream() -> Iterator[tuple[Server, int]]:
    """The fake OpenAI upstream on a free loopback port, ready to answer."""
    port = free_port()
    with Server(
        "fake-upstream",
        [str(MAIN_PYTHON), "-m", "bench.fake_upstream", "--port", str(port)],
        cwd=Path(__file__).resolve().parents[1],
    ) as upstream:
        upstream.wait_http(f"http://127.0.0.1:{port}/v1/models")
        yield upstream, port


def run_gateway(
    quick: bool, levels: tuple[int, ...] = LEVELS, targets: tuple[str, ...] = TARGETS
) -> GatewayResult:
    requests, duration = (300, 10.0) if quick else (3000, 30.0)
    result = GatewayResult()
    result.versions = {"modelhub": package_version("modelhub")}
    with tempfile.TemporaryDirectory(prefix="bench-gateway-") as tmp:
        work = Path(tmp)
        with fake_upstream() as (upstream, up_port):
            for target in targets:
                if target == "floor":
                    server, url, headers = (
                        upstream,
                        f"http://127.0.0.1:{up_port}/v1/chat/completions",
                        [],
                    )
                elif target == "modelhub":
                    server, url, headers = _modelhub(up_port, work)
                else:
                    server, url, headers = _litellm(up_port, work)
                    result.versions["litellm"] = peer_version(litellm_python(), "litellm")
                try:
                    result.levels[target], result.rss_idle[target] = _levels(
                        server,
                        url,
                        headers,
                        {**BODY, "model": LITELLM_MODEL} if target == "litellm" else BODY,
                        levels,
                        requests,
                        duration,
                    )
                finally:
                    if server is not upstream:
                        server.stop()
    return result


def gateway_tables(result: GatewayResult) -> str:
    floor = result.levels.get("floor", {})
    rows = []

    def added(target: str, c: int, key: str) -> float | None:
        r, f = result.levels.get(target, {}).get(c), floor.get(c)
        return None if r is None or f is None else r[key] - f[key]

    for c in sorted(next(iter(result.levels.values()), {})):
        for target in TARGETS:
            r = result.levels.get(target, {}).get(c)
            if r is None:
                continue
            rows.append(
                [
                    c,
                    LABELS[target],
                    fmt(r["rps"], 0),
                    fmt(r["latency_p50_ms"], 2),
                    fmt(r["latency_p99_ms"], 2),
                    "-" if target == "floor" else fmt(added(target, c, "latency_p50_ms"), 2),
                    "-" if target == "floor" else fmt(added(target, c, "latency_p99_ms"), 2),
                    fmt(r["cpu_ms_per_request"], 2),
                    f"{r['completed']}/{r['errors']}",
                ]
            )
        ours, theirs = (
            result.levels.get("modelhub", {}).get(c),
            result.levels.get("litellm", {}).get(c),
        )
        if ours and theirs:
            rows.append(
                [
                    c,
                    "**modelhub / LiteLLM**",
                    f"**{ratio(ours['rps'], theirs['rps'])}**",
                    "",
                    "",
                    f"**{ratio(added('modelhub', c, 'latency_p50_ms'), added('litellm', c, 'latency_p50_ms'))}**",
                    f"**{ratio(added('modelhub', c, 'latency_p99_ms'), added('litellm', c, 'latency_p99_ms'))}**",
                    f"**{ratio(ours['cpu_ms_per_request'], theirs['cpu_ms_per_request'])}**",
                    "",
                ]
            )
    return (
        header("Gateway overhead (fake upstream, streamed 12-chunk reply)", result.versions)
        + "\n"
        + table(
            [
                "Concurrency",
                "Target",
                "req/s",
                "p50 ms",
                "p99 ms",
                "added p50 ms",
                "added p99 ms",
                "CPU s / 1k req",
                "ok/errors",
            ],
            rows,
        )
        + "\nCPU s / 1k req is the server process tree's user+system time (the floor row: the fake "
        "upstream's own). Ratio row: modelhub's value over LiteLLM's (req/s: higher is better; the "
        "rest: lower is better).\n"
    )


def memory_table(result: GatewayResult) -> str:
    mib = 2**20
    rows = []
    top = max((c for levels in result.levels.values() for c in levels), default=0)
    for target in TARGETS:
        if target not in result.rss_idle:
            continue
        peak = result.levels[target].get(top, {}).get("rss_peak") if top else None
        rows.append(
            [
                LABELS[target],
                fmt(result.rss_idle[target] / mib, 0),
                fmt(peak / mib if peak else None, 0),
                ratio(result.rss_idle[target], result.rss_idle.get("litellm")),
                ratio(peak, result.levels.get("litellm", {}).get(top, {}).get("rss_peak")),
            ]
        )
    return (
        header("Gateway memory (VmRSS of the server process tree)", result.versions)
        + "\n"
        + table(
            [
                "Target",
                "RSS idle MiB",
                f"RSS peak MiB at concurrency {top}",
                "idle vs LiteLLM",
                "peak vs LiteLLM",
            ],
            rows,
        )
        + "\nIdle: after a 100-request warm-up, nothing in flight. Peak: sampled every 100 ms during the "
        "highest concurrency level.\n"
    )
