"""Throwaway PostgreSQL and Redis servers: own temp directory, own port, never a service.

A missing binary fails the test with what to install: these tests are never skipped.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

__all__ = ["PostgresCluster", "RedisServer", "free_port"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _postgres_bin(name: str) -> str:
    found = shutil.which(name) or next(
        iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None
    )
    if found is None:
        pytest.fail(
            f"PostgreSQL's {name} not found: install Debian's 'postgresql' package (make system-deps)"
        )
    return found


class PostgresCluster:
    """``initdb`` in a temp directory; trust auth on 127.0.0.1 and a socket in that directory.

    PostgreSQL refuses to run as root, so as root the cluster runs as ``postgres`` (the
    Debian package's user) or ``nobody``.
    """

    def __init__(self) -> None:
        # The other programs sit next to initdb (the PATH may only link some of them).
        bindir = Path(_postgres_bin("initdb")).resolve().parent
        self.initdb, self.pg_ctl, self.createdb = (
            str(bindir / n) for n in ("initdb", "pg_ctl", "createdb")
        )
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="modelhub-pg-"))
        self.data = self.root / "data"
        self._user = None
        if os.geteuid() == 0:
            self._user = next(u for u in ("postgres", "nobody") if _user_exists(u))
            entry = pwd.getpwnam(self._user)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        self._as_user(
            [
                self.initdb,
                "-D",
                str(self.data),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
            ]
        )

    def _as_user(self, command: list[str]) -> None:
        if self._user is not None:
            command = ["runuser", "-u", self._user, "--", *command]
        result = subprocess.run(command, check=False, capture_output=True, text=True, cwd=self.root)
        if result.returncode != 0:
            raise RuntimeError(f"{command} failed:\n{result.stdout}\n{result.stderr}")

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
            # No fsync: fast, and a stop loses nothing as long as the machine stays up. (No
            # synchronous_commit=off: an immediate stop would lose committed rows.)
            "-c fsync=off -c full_page_writes=off"
        )
        self._as_user(
            [
                self.pg_ctl,
                "-D",
                str(self.data),
                "-l",
                str(self.root / "log"),
                "-o",
                options,
                "-w",
                "start",
            ]
        )

    def stop(self) -> None:
        """Immediate: like a crash, so clients see the connection drop."""
        self._as_user([self.pg_ctl, "-D", str(self.data), "-m", "immediate", "-w", "stop"])

    def url(self, database: str) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        self._as_user(
            [self.createdb, "-h", str(self.root), "-p", str(self.port), "-U", "postgres", name]
        )
        return self.url(name)

    def destroy(self) -> None:
        try:
            self.stop()
        except RuntimeError:
            pass  # already stopped
        shutil.rmtree(self.root, ignore_errors=True)


class RedisServer:
    """``redis-server`` on its own port; ``kill`` and ``start`` again on the same port."""

    def __init__(self) -> None:
        self.binary = shutil.which("redis-server")
        if self.binary is None:
            pytest.fail(
                "redis-server not found: install Debian's 'redis-server' package (make system-deps)"
            )
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="modelhub-redis-"))
        self.process: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.root),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: clients see their connections drop, as in a crash."""
        self.process.kill()
        self.process.wait(timeout=10)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def destroy(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        shutil.rmtree(self.root, ignore_errors=True)


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True
