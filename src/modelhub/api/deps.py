"""FastAPI dependencies: the app's long-lived parts, and the caller's identity."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import Request, Response
from fastapi.routing import APIRoute

from modelhub import access
from modelhub.platform import Platform, Principal
from modelhub.platform.auth import check_model
from modelhub.platform.management import Management
from modelhub.serving.chat import ChatService
from modelhub.serving.deployment import Deployment

__all__ = ["AuthenticatedRoute", "Hub", "authenticate", "hub"]

_PRINCIPAL = "modelhub.principal"  # the scope key under which a request keeps its caller


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
    """The caller, looked up once per request (``AuthenticatedRoute`` first, then the route
    with its model, which only checks the model against the contract)."""
    if model is not None:
        access.note_model(model)
    principal = request.scope.get(_PRINCIPAL)
    if principal is None:
        principal = await hub(request).platform.authenticate(
            request.headers.get("authorization"), None
        )
        request.scope[_PRINCIPAL] = principal
        access.note_contract(principal.contract_name)
    if model is not None:
        check_model(principal, model)
    return principal


class AuthenticatedRoute(APIRoute):
    """A route that checks the caller's key before FastAPI reads and validates the body, so
    a caller without a valid key learns only that (401), whatever it sent, and no body is
    parsed for it. The route's own ``authenticate(request, model)`` then checks the model
    against the contract of the caller found here."""

    def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
        handler = super().get_route_handler()

        async def authenticated(request: Request) -> Response:
            await authenticate(request)
            return await handler(request)

        return authenticated
