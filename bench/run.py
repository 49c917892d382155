"""Entry point: ``python -m bench.run [--quick] [--reps N] [--only gateway|engine|encoding|memory]``.

Runs the benchmarks one after another (never two loads at once: the machine is small and
shared), prints each one's markdown tables and issue 13's done-when ratios, and on a full
run of everything writes ``bench/RESULTS.md``. Raw figures (every repetition's summary) go
to ``bench/out/results.json``. A server that generates or counts other than asked fails
the run (``bench.engine.TokenMismatch``). No test asserts timings.
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


def _save(raw: dict[str, object]) -> None:
    """Raw figures, written after each part so that a later failure loses nothing."""
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    (OUT_DIR / "results.json").write_text(json.dumps(raw, indent=2, default=str))


def _print(text: str, parts: list[str]) -> None:
    print("\n" + text, flush=True)
    parts.append(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="smaller levels and 2 repetitions (a smoke run)"
    )
    parser.add_argument("--reps", type=int, help="repetitions (default: 5, quick: 2)")
    parser.add_argument(
        "--only", choices=SECTIONS, action="append", help="run only these (repeatable)"
    )
    args = parser.parse_args(argv)
    chosen = tuple(args.only or SECTIONS)
    reps = args.reps or (2 if args.quick else 5)
    # Never leave a server behind: on exit, and on SIGTERM (turned into an exception so that
    # every ``finally`` runs).
    atexit.register(stop_all)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.monotonic()
    parts: list[str] = []
    raw: dict[str, object] = {}
    engine = gateway = None

    if "engine" in chosen:
        from bench.engine import run_engine
        from bench.tables import engine_tables

        engine = run_engine(args.quick, reps)
        raw["engine"] = engine.__dict__
        _save(raw)
        _print(engine_tables(engine), parts)
    if "gateway" in chosen or "memory" in chosen:
        from bench.gateway import run_gateway
        from bench.tables import gateway_tables, memory_table

        gateway = run_gateway(args.quick, reps)
        raw["gateway"] = gateway.__dict__
        _save(raw)
        if "gateway" in chosen:
            from bench.journal import journal_table

            _print(gateway_tables(gateway), parts)
            _print(journal_table(args.quick), parts)
        if "memory" in chosen:
            _print(memory_table(gateway), parts)
    if "encoding" in chosen:
        from bench.encoding import encoding_table, run_encoding

        result = run_encoding(args.quick)
        raw["encoding"] = {"cases": result.cases, "versions": result.versions}
        _print(encoding_table(result), parts)
    if engine is not None or gateway is not None:
        from bench.tables import targets_table

        _print(targets_table(engine, gateway if "gateway" in chosen else None), parts)

    elapsed = time.monotonic() - started
    _save(raw)
    print(f"\n[bench] done in {elapsed / 60:.1f} min", file=sys.stderr)
    if not args.quick and not args.only and args.reps is None:
        (BENCH_DIR / "RESULTS.md").write_text(
            "# Benchmark results (latest full run: `make bench`)\n\n"
            + "\n".join(parts)
            + f"\nWall time of the run: {elapsed / 60:.1f} min.\n"
        )
        print(f"[bench] wrote {BENCH_DIR / 'RESULTS.md'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
