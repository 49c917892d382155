"""Benchmark 1 (gateway overhead) and 4 (gateway memory), on a production-like workload.

A fake vLLM-like upstream (``bench.fake_upstream``: ``/tokenize``, a 12-chunk burst, or a
256-chunk stream at a steady pace) sits behind every gateway. Targets, all up at once and
measured one at a time in a rotating order, every repetition:

- the upstream itself (the floor);
- modelhub with auth, limits and the ledger on: 1,000 API keys used round-robin over 10
  contracts (so the per-key auth cache rarely helps), the upstream's ``/tokenize`` called
  as production calls vLLM's;
- LiteLLM's proxy with a master key and no database (its virtual keys, budgets and spend
  logs need PostgreSQL, so it does less bookkeeping than modelhub), at 1 worker and at
  workers = cores, as separate rows.

Every request asks for ``include_usage``. Levels: closed loop at concurrency 1 (the added
latency of one request alone) and 16 (the most requests per second), and open-loop
Poisson arrivals at a fixed rate of burst replies and of paced 256-chunk streams. Added
latency is a percentile minus the floor's at the same level in the same repetition.
"""

from __future__ import annotations

import json
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
from bench.report import package_version
from bench.stats import summarize

__all__ = [
    "LEVELS",
    "TARGETS",
    "GatewayLevel",
    "GatewayResult",
    "fake_upstream",
    "gateway_work",
    "run_gateway",
    "start_modelhub",
]

MODEL = "meta-llama/Llama-3.3-70B-Instruct"
# LiteLLM picks a tokenizer from the model name to count streamed tokens and downloads some
# from the Hugging Face Hub; a neutral name and ``disable_hf_tokenizer_download`` keep it on
# its bundled tiktoken files (and on loopback).
LITELLM_MODEL = "bench-70b"
CATALOG_FILE = "llama-3.3-70b-instruct.toml"
CONTRACTS, KEYS = 10, 1000
CORES = len(os.sched_getaffinity(0))
TARGETS = ("floor", "modelhub", "litellm-1", f"litellm-{CORES}")


@dataclass(frozen=True)
class GatewayLevel:
    label: str
    chunks: int  # 12: one burst; more: paced
    concurrency: int | None = None
    rate: float | None = None
    seconds: float = 5.0

    def items(self, quick: bool) -> int:
        seconds = self.seconds / 2 if quick else self.seconds
        if self.rate is not None:
            return max(1, int(self.rate * seconds))
        return 100_000  # closed loop: bounded by time


LEVELS = (
    GatewayLevel("burst c=1", 12, concurrency=1, seconds=4.0),
    GatewayLevel("burst c=16", 12, concurrency=16),
    GatewayLevel("burst 25 req/s", 12, rate=25.0, seconds=6.0),
    GatewayLevel("stream-256 5 req/s", 256, rate=5.0, seconds=6.0),
)


@dataclass
class GatewayResult:
    runs: dict[str, dict[str, list[dict]]] = field(default_factory=dict)  # level, target
    rss_idle: dict[str, int] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    flags: dict[str, object] = field(default_factory=dict)


@contextmanager
def fake_upstream() -> Iterator[tuple[Server, int]]:
    """The fake upstream on a free loopback port, ready to answer."""
    port = free_port()
    with Server(
        "fake-upstream",
        [str(MAIN_PYTHON), "-m", "bench.fake_upstream", "--port", str(port)],
        cwd=Path(__file__).resolve().parents[1],
    ) as upstream:
        upstream.wait_http(f"http://127.0.0.1:{port}/v1/models")
        yield upstream, port


def start_modelhub(upstream_port: int, work: Path) -> tuple[Server, str, list[list[str]]]:
    """modelhub serving only the 70B catalog entry (no embedded model loaded), auth on."""
    data, catalog = work / "data", work / "catalog"
    data.mkdir()
    catalog.mkdir()
    shutil.copy(
        Path(__file__).resolve().parents[1] / "models" / CATALOG_FILE, catalog / CATALOG_FILE
    )
    env = {
        "MODELHUB_DATA_DIR": str(data),
        "MODELHUB_LOG_LEVEL": "warning",
        "MODELHUB_BACKENDS": json.dumps(
            {MODEL: {"upstreams": [f"http://127.0.0.1:{upstream_port}/v1"]}}
        ),
    }
    secrets = json.loads(
        subprocess.run(
            [str(MAIN_PYTHON), "-m", "bench.provision"]
            + ["--contracts", str(CONTRACTS), "--keys", str(KEYS)],
            env={**os.environ, **env},
            cwd=Path(__file__).resolve().parents[1],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    port = free_port()
    cli = str(MAIN_PYTHON.parent / "modelhub")
    server = Server(
        "gateway-modelhub",
        [cli, "serve", "--port", str(port), "--catalog", str(catalog)],
        env=env,
    )
    server.wait_http(f"http://127.0.0.1:{port}/v1/models")
    headers = [[f"authorization: Bearer {s}"] for s in secrets]
    return server, f"http://127.0.0.1:{port}/v1/chat/completions", headers


def _litellm(upstream_port: int, work: Path, workers: int) -> tuple[Server, str, list[list[str]]]:
    """LiteLLM's proxy, no database; a master key is required to start, so its auth check
    runs on every request. Started, not yet waited for: its import takes
    minutes on a busy machine, in every worker."""
    python = litellm_python()
    config = work / f"litellm-{workers}.yaml"
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
        f"gateway-litellm-{workers}",
        [str(python.parent / "litellm"), "--config", str(config)]
        + ["--host", "127.0.0.1", "--port", str(port), "--num_workers", str(workers)]
        # uvicorn's supervisor restarts a worker that misses its 5 s health check, and a
        # busy machine imports LiteLLM for minutes: without this, workers never come up.
        + (["--timeout_worker_healthcheck", "900"] if workers > 1 else []),
        env=env,
    )
    return (
        server,
        f"http://127.0.0.1:{port}/v1/chat/completions",
        [["authorization: Bearer sk-bench-master"]],
    )


def gateway_work(target: str, headers: list[list[str]], chunks: int) -> list[list[dict]]:
    body = {
        "model": LITELLM_MODEL if target.startswith("litellm") else MODEL,
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": chunks,
        "messages": [{"role": "user", "content": "Describe the image in one sentence."}],
    }
    return [[{"body": body, "headers": h}] for h in headers]


def run_gateway(quick: bool, repetitions: int) -> GatewayResult:
    result = GatewayResult(versions={"modelhub": package_version("modelhub")})
    with tempfile.TemporaryDirectory(prefix="bench-gateway-") as tmp, fake_upstream() as up:
        upstream, up_port = up
        work = Path(tmp)
        targets: dict[str, tuple[Server, str, list[list[str]]]] = {
            "floor": (upstream, f"http://127.0.0.1:{up_port}/v1/chat/completions", [[]])
        }
        try:
            targets["modelhub"] = start_modelhub(up_port, work)
            for workers in sorted({1, CORES}):
                targets[f"litellm-{workers}"] = _litellm(up_port, work, workers)
            for name, (server, url, _) in targets.items():
                if name.startswith("litellm"):
                    server.wait_http(url.replace("/v1/chat/completions", "/health/liveliness"), 900)
            result.versions["litellm"] = peer_version(litellm_python(), "litellm")
            result.flags = {
                "modelhub": f"auth on, {KEYS} keys over {CONTRACTS} contracts, ledger on",
                **{
                    t: f"--num_workers {t.split('-')[1]}, master key, no database"
                    + (", --timeout_worker_healthcheck 900" if t != "litellm-1" else "")
                    for t in targets
                    if t.startswith("litellm")
                },
            }
            for name, (server, url, headers) in targets.items():
                warm = gateway_work(name, headers, 12)
                # Every key once: a gateway looks a key up in the database on its first use
                # only, and 200 requests left 800 of modelhub's keys to the first level
                # (c=1: 3.47 ms of CPU per request there, 2.64 in the next repetition).
                measure(server, url, warm, items=max(200, len(warm)), concurrency=4, duration=30)
                time.sleep(0.5)
                result.rss_idle[name] = server.rss_bytes()
            names = list(targets)
            for rep in range(repetitions):
                order = names[rep % len(names) :] + names[: rep % len(names)]
                for level in LEVELS:
                    for name in order:
                        _run_level(result, name, targets[name], level, quick, rep)
        finally:
            for server, _, _ in targets.values():
                if server is not upstream:
                    server.stop()
    return result


def _run_level(
    result: GatewayResult,
    name: str,
    target: tuple[Server, str, list[list[str]]],
    level: GatewayLevel,
    quick: bool,
    rep: int,
) -> None:
    server, url, headers = target
    seconds = level.seconds / 2 if quick else level.seconds
    raw = measure(
        server,
        url,
        gateway_work(name, headers, level.chunks),
        items=level.items(quick),
        duration=seconds,
        concurrency=level.concurrency,
        rate=level.rate,
        seed=rep,
    )
    summary = summarize(raw)
    result.runs.setdefault(level.label, {}).setdefault(name, []).append(summary)
    print(
        f"[bench] gateway rep {rep + 1} {level.label} {name}: {summary['completed']} ok, "
        f"{summary['failed']} failed, {summary['req_per_s']:.0f} req/s, p50 "
        f"{summary['e2e_p50_ms'] or 0:.2f} ms, CPU {summary['cpu_ms_per_request'] or 0:.2f} ms/req"
        + (f" ({summary['first_error']})" if summary["failed"] else ""),
        flush=True,
    )
