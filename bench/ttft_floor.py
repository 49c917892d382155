"""The least time to first token any llama.cpp server could reach on the multi-turn
workload at one conversation, on this machine: the floor under issue 13's TTFT target.

``python -m bench.ttft_floor`` (about 3 minutes). Whatever a server caches, it must compute
each request's tokens past the longest prefix that request shares with an earlier prompt of
the run: the earlier answers in a conversation's history are the workload's own text, so no
server holds their KV. This script measures what one ``llama_decode`` of n tokens costs on
the demo GGUF, with the engine's settings, after a 2,048-token context (shorter than every
multi-turn prompt, so attention costs no more than it does there). It then gives each
request the cheapest way to cut its new tokens into ubatches, whether or not that keeps the
output exact, plus the logits of its last token. No HTTP, sampling or queueing is counted.

llama.cpp's CPU flash attention computes queries in 64-row tiles within 4 row ranges per
thread, and a tile costs the same however few rows it holds. So one ubatch costs far from
linearly in its length: on the demo model, 2 threads, a 65-token ubatch takes longer than a
66-token one, and a 129-token one about 90 ms more than a 128-token one. Sizes up to 160
are measured one by one; above that every 8th size is, and a size in between is given the
cost of the measured size below it (so the floor errs low).

The floor's median per repetition is compared with llama-server's TTFT p50 from the last
``make bench`` (``bench/out/results.json``) at the same repetition and seed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from bench.engine import KV_CELLS, SLOTS, THREADS, Level, demo_gguf, levels
from bench.peers import OUT_DIR
from bench.workloads import Tokenizer, Workloads
from modelhub.engines.prefix_cache import common_prefix

__all__ = ["main"]

CONTEXT = 2048
LEVEL = "multiturn 1 conversation"
MEASURED = [*range(1, 161), *range(168, 513, 8)]


class DecodeCosts:
    """Milliseconds of one ``llama_decode`` of n tokens after ``CONTEXT`` tokens."""

    def __init__(self, gguf: Path):
        import llama_cpp

        self._llama = llama_cpp
        llama_cpp.llama_backend_init()
        self._model = llama_cpp.llama_model_load_from_file(
            str(gguf).encode(), llama_cpp.llama_model_default_params()
        )
        params = llama_cpp.llama_context_default_params()
        params.n_ctx, params.n_seq_max, params.kv_unified = KV_CELLS, SLOTS, True
        params.n_batch = params.n_ubatch = 512
        params.n_threads = params.n_threads_batch = int(THREADS)
        params.no_perf = True
        self._ctx = llama_cpp.llama_init_from_model(self._model, params)
        self._mem = llama_cpp.llama_get_memory(self._ctx)
        self._batch = llama_cpp.llama_batch_init(512, 0, 1)
        for start in range(0, CONTEXT, 512):
            self._decode(start, 512, logits=False)

    def _decode(self, start: int, n: int, *, logits: bool) -> float:
        batch = self._batch
        for i in range(n):
            batch.token[i] = 1000 + (start + i) % 5000
            batch.pos[i] = start + i
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = 0
            batch.logits[i] = False
        batch.logits[n - 1] = logits
        batch.n_tokens = n
        began = time.perf_counter()
        if self._llama.llama_decode(self._ctx, batch) != 0:
            raise RuntimeError("llama_decode failed")
        return (time.perf_counter() - began) * 1000

    def after_context(self, n: int, *, logits: bool = False, reps: int = 2) -> float:
        """The least of ``reps`` decodes of n tokens at positions ``CONTEXT`` onwards."""
        costs = []
        for _ in range(reps):
            costs.append(self._decode(CONTEXT, n, logits=logits))
            self._llama.llama_memory_seq_rm(self._mem, 0, CONTEXT, -1)
        return min(costs)


def cheapest_cuts(costs: dict[int, float], longest: int) -> list[float]:
    """Per n up to ``longest``: the least total cost of ubatches whose lengths sum to n."""
    sizes = sorted(costs)
    per_size = [0.0] * 513
    for n in range(1, 513):
        per_size[n] = costs[max(s for s in sizes if s <= n)]
    best = [0.0] + [float("inf")] * longest
    for n in range(1, longest + 1):
        best[n] = min(best[n - k] + per_size[k] for k in range(1, min(n, 512) + 1))
    return best


def new_tokens(tokenizer: Tokenizer, workloads: Workloads, level: Level, seed: int) -> list[int]:
    """Per request of the level, in order: its tokens past the longest prefix it shares with
    the system prompt (taken as cached, as a floor should) or an earlier prompt of the
    level; its last token is always computed, for its logits."""
    earlier = [np.asarray(tokenizer.encode(workloads.system))]
    counts = []
    for conversation in workloads.multiturn(seed, level.items, level.turns):
        for prompt in conversation:
            ids = np.asarray(prompt.ids)
            shared = max(common_prefix(held, ids) for held in earlier)
            counts.append(len(ids) - min(shared, len(ids) - 1))
            earlier.append(ids)
    return counts


def _peer_p50s(results: Path) -> list[float]:
    """llama-server's TTFT p50 per repetition of the level, from the last ``make bench``."""
    if not results.exists():
        return []
    runs = json.loads(results.read_text()).get("engine", {}).get("runs", {})
    return [rep["ttft_p50_ms"] for rep in runs.get(LEVEL, {}).get("llama-server", [])]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reps", type=int, default=5, help="repetitions of the level")
    parser.add_argument("--results", type=Path, default=OUT_DIR / "results.json")
    args = parser.parse_args(argv)

    gguf = demo_gguf()
    tokenizer = Tokenizer(gguf)
    workloads = Workloads(tokenizer)
    plan = levels(quick=False)
    index = [lvl.key for lvl in plan].index(LEVEL)
    # The seeds ``make bench`` gives this level (``bench.engine.run_engine``).
    counts = [
        new_tokens(tokenizer, workloads, plan[index], 1000 * rep + index)
        for rep in range(args.reps)
    ]
    decode = DecodeCosts(gguf)
    costs = {n: decode.after_context(n) for n in MEASURED}
    logits = decode.after_context(1, logits=True) - costs[1]
    best = cheapest_cuts(costs, max(max(c) for c in counts))
    peers = _peer_p50s(args.results)

    print(f"### TTFT floor: {LEVEL}, one llama_decode per ubatch after {CONTEXT} tokens\n")
    print(
        "| repetition | new tokens per request | floor per request ms | floor p50 ms "
        "| llama-server p50 ms | floor / llama-server |"
    )
    print("|---|---|---|---|---|---|")
    ratios = []
    for rep, rep_counts in enumerate(counts):
        floors = [best[n] + logits for n in rep_counts]
        p50 = statistics.median(floors)
        peer = ratio = "-"
        if rep < len(peers):
            ratios.append(p50 / peers[rep])
            peer, ratio = f"{peers[rep]:.0f}", f"{ratios[-1]:.2f}"
        shown = ", ".join(f"{f:.0f}" for f in floors)
        print(f"| {rep} | {rep_counts} | {shown} | {p50:.0f} | {peer} | {ratio} |")
    if ratios:
        print(f"\nMedian floor / llama-server over repetitions: {statistics.median(ratios):.2f}")
    print(
        "\nOne ubatch, ms: "
        + ", ".join(f"{n}: {costs[n]:.0f}" for n in (32, 63, 64, 65, 66, 127, 128, 129, 130, 256))
        + f"; logits of one row: {logits:.0f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
