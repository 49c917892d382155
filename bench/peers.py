"""Peers and processes: virtual environments for the servers we compare against, building
``llama-server``, and starting / measuring / stopping server processes.

Peers are never project dependencies. Each gets its own venv under ``bench/.peers/``,
created on first use (pip's cache makes re-creation quick). ``llama-server`` is built
with cmake from the llama.cpp sources vendored in llama-cpp-python's sdist from PyPI, the
same version the project's venv runs.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tarfile
import time
import urllib.request
from importlib.metadata import version
from pathlib import Path
from typing import Self

__all__ = [
    "BENCH_DIR",
    "LOOPBACK_GUARD",
    "MAIN_PYTHON",
    "OUT_DIR",
    "PEERS_DIR",
    "Server",
    "free_port",
    "litellm_python",
    "llama_server_binary",
    "llamacpp_server_python",
    "peer_version",
    "py_spy",
    "stop_all",
]

BENCH_DIR = Path(__file__).resolve().parent
PEERS_DIR = BENCH_DIR / ".peers"
OUT_DIR = BENCH_DIR / "out"
MAIN_PYTHON = Path(sys.executable)
# PYTHONPATH entry for peer servers: refuses non-loopback name lookups (see its docstring).
LOOPBACK_GUARD = BENCH_DIR / "loopback_guard"
LLAMA_CPP_VERSION = version("llama-cpp-python")


def _log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# Virtual environments -----------------------------------------------------------------------
def _ensure_venv(name: str, packages: list[str]) -> Path:
    """A venv at ``.peers/<name>`` with ``packages``; a stamp file records what was asked."""
    venv = PEERS_DIR / name
    python = venv / "bin" / "python"
    stamp = venv / ".installed"
    wanted = "\n".join(packages)
    if stamp.exists() and stamp.read_text() == wanted:
        return python
    _log(f"creating peer venv {venv} with {packages} (once)")
    subprocess.run(
        [getattr(sys, "_base_executable", "python3"), "-m", "venv", "--clear", str(venv)],
        check=True,
    )
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *packages],
        check=True,
    )
    stamp.write_text(wanted)
    return python


def litellm_python() -> Path:
    return _ensure_venv("litellm", ["litellm[proxy]"])


def llamacpp_server_python() -> Path:
    # The same llama-cpp-python version as modelhub's venv (pip's cache holds its wheel).
    return _ensure_venv("llamacpp", [f"llama-cpp-python[server]=={LLAMA_CPP_VERSION}"])


def py_spy() -> Path:
    return _ensure_venv("tools", ["py-spy"]).parent / "py-spy"


def peer_version(python: Path, distribution: str) -> str:
    out = subprocess.run(
        [
            str(python),
            "-c",
            f"from importlib.metadata import version; print(version({distribution!r}))",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    return out.stdout.strip() or "?"


# llama-server ---------------------------------------------------------------------------------
def llama_server_binary() -> Path:
    """Builds ``llama-server`` from the sdist's vendored llama.cpp (about 7 min on 2 cores)."""
    src = PEERS_DIR / "src" / f"llama_cpp_python-{LLAMA_CPP_VERSION}"
    binary = src / "build" / "bin" / "llama-server"
    if binary.exists():
        return binary
    sdist_dir = PEERS_DIR / "src"
    sdist_dir.mkdir(parents=True, exist_ok=True)
    sdist = sdist_dir / f"llama_cpp_python-{LLAMA_CPP_VERSION}.tar.gz"
    if not sdist.exists():
        _log(f"downloading llama-cpp-python {LLAMA_CPP_VERSION} sdist")
        subprocess.run(
            [
                str(MAIN_PYTHON),
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--no-binary",
                ":all:",
                f"llama-cpp-python=={LLAMA_CPP_VERSION}",
                "-d",
                str(sdist_dir),
            ],
            check=True,
        )
    if not src.exists():
        with tarfile.open(sdist) as tar:
            tar.extractall(sdist_dir, filter="data")
    _log("building llama-server with cmake (several minutes)")
    subprocess.run(
        [
            "cmake",
            "-B",
            "build",
            "-DLLAMA_BUILD_SERVER=ON",
            "-DLLAMA_CURL=OFF",
            "-DGGML_NATIVE=ON",
            "-DLLAMA_BUILD_TESTS=OFF",
            "-DLLAMA_BUILD_EXAMPLES=OFF",
            "vendor/llama.cpp",
        ],
        cwd=src,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    subprocess.run(
        ["cmake", "--build", "build", "--target", "llama-server", f"-j{os.cpu_count() or 2}"],
        cwd=src,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return binary


# Processes ------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _children(pid: int) -> list[int]:
    found = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                found += [int(c) for c in f.read().split()]
    except OSError:
        return []
    return found


def _tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        todo += _children(p)
    return pids


_LIVE: set[Server] = set()


def stop_all() -> None:
    """Stops every server still running (the driver calls it on exit and on signals)."""
    for server in list(_LIVE):
        server.stop()


class Server:
    """A server process (in its own session, so stopping it stops its children too)."""

    def __init__(
        self, name: str, argv: list[str], env: dict[str, str] | None = None, cwd: Path | None = None
    ):
        self.name = name
        OUT_DIR.mkdir(parents=True, exist_ok=True)
        self.log_path = OUT_DIR / f"{name}.log"
        self.log_path.unlink(missing_ok=True)  # a stray old process must not write into the new log
        # Open for the process's lifetime, closed by stop().
        self._log_file = open(self.log_path, "wb")  # noqa: SIM115
        full_env = {**os.environ, **(env or {})}
        self.proc = subprocess.Popen(
            argv,
            env=full_env,
            cwd=cwd,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        _LIVE.add(self)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_http(self, url: str, timeout: float = 120.0) -> None:
        """Until ``GET url`` answers 2xx (a 401 also proves the server is up)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited ({self.proc.returncode}); see {self.log_path}:\n"
                    + self.log_path.read_text(errors="replace")[-2000:]
                )
            try:
                with urllib.request.urlopen(url, timeout=2):
                    return
            except urllib.error.HTTPError as exc:
                if exc.code in (401, 403):
                    return
            except OSError:
                pass
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(
            f"{self.name} did not answer {url} in {timeout:.0f} s; see {self.log_path}"
        )

    def cpu_seconds(self) -> float:
        """utime + stime of the process and its live children, plus reaped children's."""
        tick = os.sysconf("SC_CLK_TCK")
        total = 0
        for p in _tree(self.pid):
            try:
                with open(f"/proc/{p}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            # fields[0] is state (field 3); utime, stime, cutime, cstime are fields 14-17.
            total += sum(int(x) for x in fields[11:15])
        return total / tick

    def rss_bytes(self) -> int:
        """VmRSS summed over the process tree (multi-process servers count whole)."""
        total = 0
        for p in _tree(self.pid):
            try:
                with open(f"/proc/{p}/status") as f:
                    for line in f:
                        if line.startswith("VmRSS:"):
                            total += int(line.split()[1]) * 1024
            except OSError:
                continue
        return total

    def stop(self) -> None:
        _LIVE.discard(self)
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            except ProcessLookupError:
                pass
        self._log_file.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


if __name__ == "__main__":
    # ``python -m bench.peers``: build every peer now (``make bench-peers``).
    for build in (llama_server_binary, llamacpp_server_python, litellm_python):
        _log(f"ready: {build()}")
