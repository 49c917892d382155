"""Liveness, readiness and Prometheus metrics (no authentication: for the operator's probes)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from modelhub.api.deps import hub

__all__ = ["router"]

router = APIRouter()


@router.get("/health")
async def health() -> dict:
    return {"status": "ok"}


@router.get("/ready")
async def ready(request: Request) -> Response:
    deployment = hub(request).deployment
    models = {s.card.id: (s.backend.ready if s.backend else None) for s in deployment}
    ok = deployment.ready
    return JSONResponse({"ready": ok, "models": models}, status_code=200 if ok else 503)


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    return Response(generate_latest(hub(request).metrics.registry), media_type=CONTENT_TYPE_LATEST)
