"""The app factory: parts built in the lifespan, middleware and routes assembled here."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI

from modelhub.api.bodylimit import BodyLimitMiddleware
from modelhub.api.deps import Hub
from modelhub.api.errors import install_error_handlers
from modelhub.api.routes import chat, completions, models, ops, tokenize, unsupported, usage
from modelhub.catalog import Catalog, Clock, load_cards
from modelhub.metrics import Metrics
from modelhub.platform import Platform
from modelhub.serving.chat import ChatService
from modelhub.serving.deployment import Deployment
from modelhub.settings import Settings

__all__ = ["create_app"]

log = logging.getLogger(__name__)


def create_app(
    settings: Settings | None = None,
    *,
    clock: Clock | None = None,
    on_first_key: Callable[[str], None] | None = None,
) -> FastAPI:
    """``clock`` moves the catalog's notion of now (lifecycle tests); ``on_first_key``
    receives the key of the ``default`` contract created on an empty database."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        metrics = Metrics()
        catalog_kwargs = {"clock": clock} if clock else {}
        catalog = Catalog(
            load_cards(settings.catalog_dir), backends=settings.backends, **catalog_kwargs
        )
        platform = await Platform.open(settings)
        deployment = Deployment(catalog, settings, metrics)
        try:
            key = await platform.bootstrap()
            if key and on_first_key:
                on_first_key(key)
            await deployment.start()
            app.state.hub = Hub(
                deployment, platform, ChatService(deployment, platform, metrics, settings), metrics
            )
            yield
        finally:
            await deployment.close()
            await platform.close()

    app = FastAPI(title="modelhub", lifespan=lifespan, docs_url=None, redoc_url=None)
    install_error_handlers(app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    for module in (chat, completions, models, tokenize, usage, unsupported, ops):
        app.include_router(module.router)
    return app
