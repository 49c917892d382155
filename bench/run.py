"""Entry point: ``python -m bench.run [--quick] [--only gateway|engine|encoding|memory]``.

Runs the benchmarks one after another (never two servers at once: the machine is small
and shared), prints each one's markdown table, and on a full run of everything writes
``bench/RESULTS.md``. Raw numbers go to ``bench/out/results.json``. No test asserts timings.
"""

from __future__ import annotations

import argparse
import atexit
import json
import signal
import sys
import time

from bench.peers import BENCH_DIR, OUT_DIR, stop_all

__all__ = ["main"]

SECTIONS = ("gateway", "engine", "encoding", "memory")


def _print(text: str, parts: list[str]) -> None:
    print("\n" + text, flush=True)
    parts.append(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="fewer requests per level (under 5 minutes)"
    )
    parser.add_argument(
        "--only", choices=SECTIONS, action="append", help="run only these (repeatable)"
    )
    args = parser.parse_args(argv)
    chosen = tuple(args.only or SECTIONS)
    # Never leave a server behind: on exit, and on SIGTERM (turned into an exception so that
    # every ``finally`` runs).
    atexit.register(stop_all)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.monotonic()
    parts: list[str] = []
    raw: dict[str, object] = {}

    if "gateway" in chosen or "memory" in chosen:
        from bench.gateway import gateway_tables, memory_table, run_gateway

        # Memory alone needs only the highest level; it is measured during the gateway run.
        levels = (1, 16, 64) if "gateway" in chosen else (64,)
        result = run_gateway(args.quick, levels=levels)
        raw["gateway"] = {
            "levels": result.levels,
            "rss_idle": result.rss_idle,
            "versions": result.versions,
        }
        if "gateway" in chosen:
            _print(gateway_tables(result), parts)
        if "memory" in chosen:
            _print(memory_table(result), parts)
    if "engine" in chosen:
        from bench.engine import engine_table, run_engine

        result = run_engine(args.quick)
        raw["engine"] = {"levels": result.levels, "versions": result.versions}
        _print(engine_table(result), parts)
    if "encoding" in chosen:
        from bench.encoding import encoding_table, run_encoding

        result = run_encoding(args.quick)
        raw["encoding"] = {"cases": result.cases, "versions": result.versions}
        _print(encoding_table(result), parts)

    elapsed = time.monotonic() - started
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    (OUT_DIR / "results.json").write_text(json.dumps(raw, indent=2, default=str))
    print(f"\n[bench] done in {elapsed / 60:.1f} min", file=sys.stderr)
    if not args.quick and not args.only:
        (BENCH_DIR / "RESULTS.md").write_text(
            "# Benchmark results (latest full run: `make bench`)\n\n"
            + "\n".join(parts)
            + f"\nWall time of the run: {elapsed / 60:.1f} min.\n"
        )
        print(f"[bench] wrote {BENCH_DIR / 'RESULTS.md'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
