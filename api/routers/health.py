"""Liveness, readiness and metrics: for orchestrators and Prometheus, no authentication."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.deps import BrokerDep, PoolDep
from flowbill.errors import NotFound

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up and serving."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "A dependency is not reachable."}})
async def readyz(pool: PoolDep, broker: BrokerDep) -> JSONResponse:
    """Ready to serve: the database answers and the broker connection is up."""
    database = False
    try:
        async with asyncio.timeout(2.0), pool.connection(timeout=2.0) as conn:
            await conn.execute("SELECT 1")
            database = True
    except Exception:  # noqa: S110 - any failure means "not ready"
        pass
    checks = {"database": database, "broker": broker.connected}
    ready = all(checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "not ready", "checks": checks},
        status_code=200 if ready else 503,
    )


@router.get("/metrics", response_class=Response)
async def prometheus_metrics(request: Request) -> Response:
    """Prometheus metrics of this API process (404 when FLOWBILL_API_METRICS_PORT serves them
    on an internal port instead)."""
    if request.app.state.settings.api_metrics_port:
        raise NotFound("metrics are served on the internal metrics port")
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
