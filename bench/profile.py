"""Profiles modelhub under the gateway load with py-spy (``python -m bench.profile``).

Starts the fake upstream and modelhub (auth, limits, ledger on) as the gateway benchmark
does, drives concurrency 16 while ``py-spy record`` samples the server, writes the raw
collapsed stacks to ``bench/out/profile-gateway.txt`` (flamegraph.pl / speedscope read it)
and prints the functions with the most samples, inclusive and self.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import threading
from collections import Counter
from pathlib import Path

from bench.gateway import fake_upstream, gateway_work, start_modelhub
from bench.measure import measure
from bench.peers import OUT_DIR, py_spy

__all__ = ["summarise"]


def thread_cpu(pid: int) -> Counter:
    """CPU seconds (user + system) per thread ("main" or "name/tid") of a process."""
    tick, found = os.sysconf("SC_CLK_TCK"), Counter()
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                head, _, rest = f.read().rpartition(")")
        except OSError:
            continue
        fields = rest.split()
        label = "main" if int(tid) == pid else f"{head.partition('(')[2]}/{tid}"
        found[label] += (int(fields[11]) + int(fields[12])) / tick
    return found


def summarise(collapsed: Path, top: int = 25) -> str:
    inclusive, self_time, total = Counter(), Counter(), 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        frames = stack.split(";")
        total += n
        self_time[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    lines = [f"{total} samples", "", "inclusive:"]
    lines += [f"  {100 * n / total:5.1f}%  {f}" for f, n in inclusive.most_common(top)]
    lines += ["", "self:"]
    lines += [f"  {100 * n / total:5.1f}%  {f}" for f, n in self_time.most_common(top)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--chunks", type=int, default=12, help="12: burst; more: paced stream")
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--native", action="store_true", help="include C frames (py-spy --native)")
    args = parser.parse_args()
    extra = ["--native"] if args.native else []
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    out = OUT_DIR / "profile-gateway.txt"
    spy = py_spy()
    with (
        tempfile.TemporaryDirectory(prefix="bench-profile-") as tmp,
        fake_upstream() as (_, up_port),
    ):
        server, url, headers = start_modelhub(up_port, Path(tmp))
        work = gateway_work("modelhub", headers, args.chunks)
        with server:
            measure(server, url, work, items=100, concurrency=4, duration=10)
            before = thread_cpu(server.pid)
            recorder = subprocess.Popen(
                [
                    str(spy),
                    "record",
                    "--pid",
                    str(server.pid),
                    "--duration",
                    str(args.seconds),
                    "--rate",
                    "250",
                    "--format",
                    "raw",
                    "--nonblocking",
                    *extra,
                    "--output",
                    str(out),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            load = threading.Thread(
                target=measure,
                args=(server, url, work),
                kwargs={
                    "concurrency": args.concurrency,
                    "items": 10**9,
                    "duration": args.seconds,
                },
            )
            load.start()
            recorder.wait()
            load.join()
            used = thread_cpu(server.pid)
            used.subtract(before)
    print("CPU seconds by thread name during the load:")
    for name, seconds in used.most_common():
        print(f"  {seconds:6.2f}  {name}")
    print(f"collapsed stacks: {out}\n")
    print(summarise(out))


if __name__ == "__main__":
    main()
