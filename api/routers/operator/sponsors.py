"""Operators: the app catalogue, tariffs and the allocation run's progress."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Path, Response, status

from api.deps import ConnDep, OperatorCaller
from api.params import Cursor, Limit
from billing.allocation import progress
from billing.allocation.schemas import BillingProgress
from billing.documents import tariffs
from billing.documents.schemas import TariffCreate, TariffPublic
from flowbill.paging import DEFAULT_LIMIT, Page
from sponsors import service as sponsors
from sponsors.schemas import AppId, CatalogueApp, CatalogueAppUpdate

router = APIRouter(prefix="/v1/operator", tags=["operator"])

AppPath = Annotated[AppId, Path(description="The app id devices report.")]


@router.get("/catalogue/apps")
async def catalogue(
    conn: ConnDep, _: OperatorCaller, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> Page[CatalogueApp]:
    """Every app the catalogue knows, by app id."""
    return await sponsors.catalogue(conn, limit=limit, cursor=cursor)


@router.put("/catalogue/apps/{app}")
async def set_app(
    conn: ConnDep, _: OperatorCaller, app: AppPath, body: CatalogueAppUpdate
) -> CatalogueApp:
    """Add an app to the catalogue (or change its category): its traffic stops being
    unclassified for usage allocated from now on."""
    return await sponsors.set_app(conn, app=app, body=body)


@router.delete("/catalogue/apps/{app}", status_code=status.HTTP_204_NO_CONTENT)
async def remove_app(conn: ConnDep, _: OperatorCaller, app: AppPath) -> Response:
    """Forget an app: its traffic is unclassified (the user's) from now on."""
    await sponsors.remove_app(conn, app)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/tariffs", status_code=status.HTTP_201_CREATED)
async def add_tariff(conn: ConnDep, _: OperatorCaller, body: TariffCreate) -> TariffPublic:
    """A new tariff from `effective_from` (default now)."""
    return await tariffs.add_tariff(conn, body=body, now=datetime.now(UTC))


@router.get("/tariffs")
async def list_tariffs(
    conn: ConnDep, _: OperatorCaller, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> Page[TariffPublic]:
    """Every tariff, oldest first: each applies from its start until the next one's."""
    return await tariffs.tariff_page(conn, limit=limit, cursor=cursor)


@router.get("/billing/progress")
async def billing_progress(conn: ConnDep, _: OperatorCaller) -> BillingProgress:
    """The allocation run's cursor and backlog."""
    return await progress.progress(conn)
