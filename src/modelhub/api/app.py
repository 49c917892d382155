"""The app factory: parts built in the lifespan, middleware and routes assembled here."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI

from modelhub import __version__
from modelhub.api.access_log import AccessLogMiddleware
from modelhub.api.bodylimit import BodyLimitMiddleware
from modelhub.api.deps import Hub
from modelhub.api.errors import install_error_handlers
from modelhub.api.openapi import install_openapi
from modelhub.api.routes import (
    admin,
    chat,
    completions,
    models,
    ops,
    tokenize,
    unsupported,
    usage,
)
from modelhub.api.server import Drain, DrainMiddleware
from modelhub.catalog import Catalog, Clock, load_cards
from modelhub.console import console_app
from modelhub.metrics import Metrics
from modelhub.platform import Platform
from modelhub.platform.admin_tokens import AdminTokenStore
from modelhub.platform.management import Management
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
    receives the key of the ``default`` contract created on an empty database. The app's
    ``state.drain`` ends the requests in flight at a shutdown's deadline (``DrainingServer``)."""
    settings = settings or Settings()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        catalog_kwargs = {"clock": clock} if clock else {}
        catalog = Catalog(
            load_cards(settings.catalog_dir), backends=settings.backends, **catalog_kwargs
        )
        metrics.set_models([card.id for card in catalog])
        platform = await Platform.open(settings)
        management = Management(
            platform.store,
            AdminTokenStore(platform.store.engine),
            [card.id for card in catalog],
            auth=settings.auth,
            before_read=platform.flush,
        )
        deployment = Deployment(catalog, settings, metrics)
        try:
            key = await platform.bootstrap()
            if key and on_first_key:
                on_first_key(key)
            await deployment.start()
            app.state.hub = Hub(
                deployment,
                platform,
                ChatService(deployment, platform, metrics, settings),
                metrics,
                management,
            )
            if settings.gc_freeze:
                # What startup built (modules, schemas, the catalog, the engine's tables)
                # lives as long as the process; a full collection need not traverse it.
                gc.collect()
                gc.freeze()
            yield
        finally:
            if settings.gc_freeze:
                gc.unfreeze()
            await deployment.close()
            await platform.close()

    app = FastAPI(
        title="modelhub",
        version=__version__,
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
        openapi_tags=[
            {"name": "admin", "description": "Contracts, keys, usage and backends (admin token)"}
        ],
    )
    install_error_handlers(app)
    app.state.drain = Drain()
    # The last added is the outermost: the access log sees every response, 413s included.
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(DrainMiddleware, drain=app.state.drain)
    app.add_middleware(AccessLogMiddleware, metrics=metrics)
    for module in (chat, completions, models, tokenize, usage, unsupported, ops, admin):
        app.include_router(module.router)
    app.mount("/console", console_app(), name="console")
    install_openapi(app)
    return app
