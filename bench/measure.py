"""Driver side of a measurement: runs the load generator as its own process against a
server and reads the server's CPU time and memory around it."""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
from pathlib import Path

from bench.peers import BENCH_DIR, MAIN_PYTHON, Server

__all__ = ["measure"]


def measure(
    server: Server,
    url: str,
    work: list[list[dict]],
    *,
    items: int,
    duration: float,
    concurrency: int | None = None,
    rate: float | None = None,
    max_concurrency: int | None = None,
    seed: int = 0,
    parse: bool = False,
) -> dict:
    """One load level (see ``bench.loadgen``): its per-request records and wall time, plus
    ``cpu_s`` (the server's process tree, user + system) and ``rss_peak`` (sampled every
    100 ms)."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(work, f)
    argv = [str(MAIN_PYTHON), "-m", "bench.loadgen", "--url", url, "--work", f.name]
    argv += ["--items", str(items), "--duration", str(duration), "--seed", str(seed)]
    if concurrency is not None:
        argv += ["--concurrency", str(concurrency)]
    if rate is not None:
        argv += ["--rate", str(rate)]
    if max_concurrency is not None:
        argv += ["--max-concurrency", str(max_concurrency)]
    if parse:
        argv.append("--parse-events")
    cpu_before = server.cpu_seconds()
    rss_peak = server.rss_bytes()
    # The records of thousands of requests overflow a pipe: the output goes to a file.
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(argv, cwd=BENCH_DIR.parent, stdout=out, stderr=err, text=True)
        try:
            while proc.poll() is None:
                rss_peak = max(rss_peak, server.rss_bytes())
                time.sleep(0.1)
        finally:
            if proc.poll() is None:  # interrupted: the load generator goes too
                proc.kill()
                proc.wait()
            Path(f.name).unlink(missing_ok=True)
        cpu = server.cpu_seconds() - cpu_before
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            raise RuntimeError(f"load generator failed: {err.read()[-2000:]}")
        result = json.load(out)
    result["cpu_s"] = cpu
    result["rss_peak"] = rss_peak
    return result
