"""Replicas of one upstream model: least-outstanding-requests routing, ejection on failure,
re-admission by active health checks."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import aiohttp

__all__ = ["Replica", "ReplicaPool"]

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Replica:
    url: str  # base of the OpenAI API, e.g. http://10.0.0.5:8000/v1
    outstanding: int = 0
    healthy: bool = True
    ejected_at: float | None = None
    served: int = 0

    def eject(self, why: str) -> None:
        if self.healthy:
            log.warning("upstream %s ejected: %s", self.url, why)
        self.healthy = False
        self.ejected_at = time.monotonic()


class ReplicaPool:
    def __init__(
        self,
        urls: list[str],
        session: Callable[[], aiohttp.ClientSession],
        *,
        check_interval_s: float,
    ):
        self.replicas = [Replica(u.rstrip("/")) for u in urls]
        self._session = session
        self._interval = check_interval_s
        self._task: asyncio.Task | None = None

    def candidates(self) -> Iterator[Replica]:
        """Healthy replicas, least outstanding first; each at most once per request.
        With none healthy, the ejected ones are tried too: better a slim chance than none."""
        healthy = sorted(
            (r for r in self.replicas if r.healthy), key=lambda r: (r.outstanding, r.served)
        )
        rest = sorted((r for r in self.replicas if not r.healthy), key=lambda r: r.ejected_at or 0)
        yield from healthy or rest

    @property
    def any_healthy(self) -> bool:
        return any(r.healthy for r in self.replicas)

    async def check(self, replica: Replica) -> bool:
        timeout = aiohttp.ClientTimeout(total=self._interval)
        try:
            async with self._session().get(f"{replica.url}/models", timeout=timeout) as r:
                ok = r.status == 200
        except (aiohttp.ClientError, TimeoutError):
            ok = False
        if ok and not replica.healthy:
            log.info("upstream %s re-admitted", replica.url)
            replica.healthy = True
            replica.ejected_at = None
        elif not ok:
            replica.eject("health check failed")
        return ok

    async def _check_forever(self) -> None:
        while True:
            await asyncio.gather(*(self.check(r) for r in self.replicas))
            await asyncio.sleep(self._interval)

    def start(self) -> None:
        self._task = asyncio.create_task(self._check_forever(), name="upstream-health")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
