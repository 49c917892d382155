"""The ``modelhub`` command run as a separate process, as an operator runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

__all__ = ["modelhub", "secret_in"]


def modelhub(
    *args: str,
    data_dir: Path | None = None,
    env: dict[str, str] | None = None,
    stdin: str | None = None,
    cwd: Path | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess:
    """``python -m modelhub.cli ARGS``; the environment's MODELHUB_ settings are dropped so
    only ``data_dir`` and ``env`` configure it."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("MODELHUB_")}
    if data_dir is not None:
        base["MODELHUB_DATA_DIR"] = str(data_dir)
    return subprocess.run(
        [sys.executable, "-m", "modelhub.cli", *args],
        env={**base, **(env or {})},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        check=False,
    )


def secret_in(stdout: str, prefix: str = "mh-") -> str:
    """The secret a create or rotate command printed on its own line."""
    return next(line.strip() for line in stdout.splitlines() if line.startswith(prefix))
