"""Markdown output: the machine/date/versions header every table carries, and tables."""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version

__all__ = ["commit", "fmt", "header", "machine", "package_version", "ratio", "table"]


def package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "?"


def machine() -> str:
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo") as f:
            mem_gib = int(f.readline().split()[1]) / 2**20
    except OSError:
        mem_gib = 0.0
    cores = len(os.sched_getaffinity(0))
    # The machine is shared: the load average says how much else was running.
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"{model}, {cores} cores, {mem_gib:.0f} GiB RAM, Linux {platform.release()}, "
        f"Python {platform.python_version()}; load average {load}"
    )


def commit() -> str:
    """The tree measured: its commit, and whether files differed from it."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def git(*args: str) -> str:
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False)
        return out.stdout.strip()

    head = git("rev-parse", "--short", "HEAD") or "?"
    return head + (
        " plus uncommitted changes" if git("status", "--porcelain", "--untracked-files=no") else ""
    )


def header(title: str, versions: dict[str, str], flags: dict[str, object] | None = None) -> str:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    vers = ", ".join(f"{k} {v}" for k, v in versions.items())
    text = (
        f"### {title}\n\n- Machine: {machine()}\n- Date: {now}\n- Commit: {commit()}\n"
        f"- Versions: {vers}\n"
    )
    for name, value in (flags or {}).items():
        text += f"- Flags of {name}: `{value if isinstance(value, str) else json.dumps(value)}`\n"
    return text


def fmt(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def ratio(ours: float | None, theirs: float | None) -> str:
    if ours is None or theirs is None or theirs == 0:
        return "-"
    return f"{ours / theirs:.2f}x"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"
