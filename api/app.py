"""The FastAPI application: factory, lifespan, middleware."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from prometheus_client import start_http_server
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api import problems
from api.broker import BrokerLink
from api.limits import BodyLimit, RateLimiter
from api.routers import ROUTERS
from api.web.templating import STATIC
from flowbill import db, metrics
from flowbill.settings import Settings, get_settings
from wallet.gateways import HttpGateways

DESCRIPTION = """
Flowbill bills the data traffic of connected cars and IoT SIMs, app by app, to the payer
of each app: sponsors (automakers, map vendors, content providers), merchants and drivers.

Authenticate with an API key: `Authorization: Bearer fbk_…`. Each key belongs to one
tenant, whose role (operator, sponsor, merchant, partner, app, driver) decides what it may call, and
which sees only its own data. Errors are RFC 9457 `application/problem+json`.
"""


class MetricsMiddleware:
    """Counts requests and their latency by route template (a bounded label)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status_code = 500

        async def send_with_status(message: Message) -> None:
            nonlocal status_code
            if message["type"] == "http.response.start":
                status_code = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "")
            metrics.HTTP_REQUESTS.labels(method, template, str(status_code)).inc()
            metrics.HTTP_REQUEST_SECONDS.labels(method, template).observe(
                time.perf_counter() - started
            )


def create_app(settings: Settings | None = None) -> FastAPI:
    """The API, wired to the database pool and the broker built in its lifespan."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.settings = resolved = settings or get_settings()
        app.state.rate_limiter = RateLimiter(resolved)
        metrics_server = None
        if resolved.api_metrics_port:
            # /metrics on an internal port of its own (not the public one).
            metrics_server, _ = start_http_server(resolved.api_metrics_port, addr=resolved.api_host)
        pool = db.create_pool(resolved, name="flowbill-api", component="api")
        await pool.open(wait=False)
        broker = BrokerLink(resolved)
        broker.start()
        app.state.pool = pool
        app.state.broker = broker
        gateways = HttpGateways(
            resolved.gateway_url, timeout_seconds=resolved.gateway_timeout_seconds
        )
        app.state.gateways = gateways
        try:
            async with gateways:
                yield
        finally:
            await broker.stop()
            await pool.close()
            if metrics_server is not None:
                metrics_server.shutdown()
                metrics_server.server_close()

    app = FastAPI(
        title="Flowbill",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    problems.install(app)
    for router in ROUTERS:
        app.include_router(router)
    # The driver page's stylesheet, script and vendored chart library: served by us, never
    # from a CDN.
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    # Outermost last: the metrics count the 413s of the body limit too.
    app.add_middleware(BodyLimit)
    app.add_middleware(MetricsMiddleware)
    return app
