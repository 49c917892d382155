"""FastAPI dependencies: the app's long-lived parts, and the caller's identity."""

from __future__ import annotations

from fastapi import Request

from modelhub.platform import Platform, Principal
from modelhub.serving.chat import ChatService
from modelhub.serving.deployment import Deployment

__all__ = ["Hub", "authenticate", "hub"]


class Hub:
    """What the routes need, built by the app's lifespan."""

    def __init__(self, deployment: Deployment, platform: Platform, chat: ChatService, metrics):
        self.deployment = deployment
        self.platform = platform
        self.chat = chat
        self.metrics = metrics


def hub(request: Request) -> Hub:
    return request.app.state.hub


async def authenticate(request: Request, model: str | None = None) -> Principal:
    return await hub(request).platform.authenticate(request.headers.get("authorization"), model)
