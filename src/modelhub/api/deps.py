"""FastAPI dependencies: the app's long-lived parts, and the caller's identity."""

from __future__ import annotations

from fastapi import Request

from modelhub import access
from modelhub.platform import Platform, Principal
from modelhub.platform.management import Management
from modelhub.serving.chat import ChatService
from modelhub.serving.deployment import Deployment

__all__ = ["Hub", "authenticate", "hub"]


class Hub:
    """What the routes need, built by the app's lifespan."""

    def __init__(
        self,
        deployment: Deployment,
        platform: Platform,
        chat: ChatService,
        metrics,
        management: Management,
    ):
        self.deployment = deployment
        self.platform = platform
        self.chat = chat
        self.metrics = metrics
        self.management = management


def hub(request: Request) -> Hub:
    return request.app.state.hub


async def authenticate(request: Request, model: str | None = None) -> Principal:
    if model is not None:
        access.note_model(model)
    principal = await hub(request).platform.authenticate(
        request.headers.get("authorization"), model
    )
    access.note_contract(principal.contract_name)
    return principal
