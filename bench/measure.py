"""Driver side of a measurement: runs the load generator as its own process against a
server and reads the server's CPU time and memory around it."""

from __future__ import annotations

import json
import subprocess
import tempfile
import time

from bench.peers import BENCH_DIR, MAIN_PYTHON, Server

__all__ = ["measure"]


def measure(
    server: Server,
    url: str,
    bodies: list[dict],
    *,
    concurrency: int,
    requests: int,
    duration: float,
    headers: list[str] = (),
    parse: bool = False,
) -> dict:
    """One load level. Adds ``cpu_s`` (server tree, user + system), ``cpu_ms_per_request`` and
    ``rss_peak`` (sampled every 100 ms) to the load generator's result."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(bodies, f)
    argv = [
        str(MAIN_PYTHON),
        "-m",
        "bench.loadgen",
        "--url",
        url,
        "--bodies",
        f.name,
        "--concurrency",
        str(concurrency),
        "--requests",
        str(requests),
        "--duration",
        str(duration),
    ]
    for h in headers:
        argv += ["--header", h]
    if parse:
        argv.append("--parse-events")
    cpu_before = server.cpu_seconds()
    rss_peak = server.rss_bytes()
    proc = subprocess.Popen(
        argv, cwd=BENCH_DIR.parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        while proc.poll() is None:
            rss_peak = max(rss_peak, server.rss_bytes())
            time.sleep(0.1)
    finally:
        if proc.poll() is None:  # interrupted: the load generator goes too
            proc.kill()
    out, err = proc.communicate()
    cpu = server.cpu_seconds() - cpu_before
    if proc.returncode != 0:
        raise RuntimeError(f"load generator failed: {err[-2000:]}")
    result = json.loads(out)
    result["cpu_s"] = cpu
    result["cpu_ms_per_request"] = 1000 * cpu / result["completed"] if result["completed"] else None
    result["rss_peak"] = rss_peak
    return result
