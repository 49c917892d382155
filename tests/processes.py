"""modelhub servers as separate OS processes (upstream replicas, a second gateway)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

__all__ = ["ServerProcess", "free_port", "spawn_modelhub"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ServerProcess:
    port: int
    args: list[str]
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, *, wait: bool = True) -> ServerProcess:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                self.args, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(
                    f"server on port {self.port} exited: {self.log.read_text()[-3000:]}"
                )
            try:
                if httpx.get(f"{self.base_url}/ready", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"server on port {self.port} not ready: {self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


def spawn_modelhub(
    tmp: Path,
    *,
    extra_args: list[str] = (),
    env: dict[str, str] | None = None,
    port: int | None = None,
) -> ServerProcess:
    port = port or free_port()
    environment = {
        **os.environ,
        "MODELHUB_DATA_DIR": str(tmp / f"data-{port}"),
        "MODELHUB_ENGINE_SLOTS": "4",
        "MODELHUB_ENGINE_CONTEXT": "2048",
        "MODELHUB_LOG_LEVEL": "warning",
        **(env or {}),
    }
    args = [sys.executable, "-m", "modelhub.cli", "serve", "--port", str(port), *extra_args]
    return ServerProcess(port, args, environment, tmp / f"server-{port}.log")
