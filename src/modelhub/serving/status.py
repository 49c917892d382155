"""What the backends are doing now: for the admin API's ``/backends`` and ``/status``."""

from __future__ import annotations

from modelhub.metrics import Metrics
from modelhub.schemas.admin import BackendStatus, ModelStatus, ReplicaStatus
from modelhub.serving.backends import UpstreamBackend
from modelhub.serving.deployment import Deployment

__all__ = ["backends", "live_status"]


def backends(deployment: Deployment) -> list[BackendStatus]:
    """Every catalog model: its backend (None when not served), load and replicas."""
    rows = []
    for served in deployment:
        backend = served.backend
        stats = backend.stats() if backend is not None else None
        replicas = (
            [
                ReplicaStatus(url=r.url, healthy=r.healthy, outstanding=r.outstanding)
                for r in backend.pool.replicas
            ]
            if isinstance(backend, UpstreamBackend)
            else []
        )
        rows.append(
            BackendStatus(
                model=served.card.id,
                engine=backend.name if backend is not None else None,
                ready=bool(backend is not None and backend.ready),
                queued=stats.queued if stats else 0,
                running=stats.running if stats else 0,
                slots=stats.slots if stats else 0,
                replicas=replicas,
            )
        )
    return rows


def live_status(deployment: Deployment, metrics: Metrics) -> list[ModelStatus]:
    """The served models' queue, running sequences, KV-cache usage and median latencies."""
    rows = []
    for model, stats in deployment.engine_stats().items():
        rows.append(
            ModelStatus(
                model=model,
                queued=stats.queued,
                running=stats.running,
                slots=stats.slots,
                kv_cache_usage=stats.kv_cache_usage,
                ttft_p50_s=metrics.median(metrics.time_to_first_token, model),
                tpot_p50_s=metrics.median(metrics.time_per_output_token, model),
                requests=metrics.request_count(model),
            )
        )
    return rows
