"""Operators: the app catalogue, the sponsors' rate card (price floors), tariffs and the
allocation run's progress."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Path, Query, Response, status

from api.deps import ConnDep, OperatorCaller
from api.params import Cursor, Limit
from billing.allocation import progress
from billing.allocation.schemas import BillingProgress
from billing.documents import tariffs
from billing.documents.schemas import TariffCreate, TariffPublic
from flowbill.paging import DEFAULT_LIMIT, Page
from sponsors import catalogue as app_catalogue
from sponsors import price_floors
from sponsors.schemas import (
    AppId,
    CatalogueApp,
    CatalogueAppUpdate,
    Category,
    Currency,
    PriceFloorPublic,
    PriceFloorSet,
)

router = APIRouter(prefix="/v1/operator", tags=["operator"])

AppPath = Annotated[AppId, Path(description="The app id devices report.")]
CurrencyPath = Annotated[Currency, Path(description="An ISO 4217 code, e.g. CNY.")]
CategoryPath = Annotated[Category, Path(description="An app category of the catalogue.")]


@router.get("/catalogue/apps")
async def catalogue(
    conn: ConnDep, _: OperatorCaller, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> Page[CatalogueApp]:
    """Every app the catalogue knows, by app id."""
    return await app_catalogue.catalogue(conn, limit=limit, cursor=cursor)


@router.put("/catalogue/apps/{app}")
async def set_app(
    conn: ConnDep, _: OperatorCaller, app: AppPath, body: CatalogueAppUpdate
) -> CatalogueApp:
    """Add an app to the catalogue (or change its category): its traffic stops being
    unclassified for usage allocated from now on."""
    return await app_catalogue.set_app(conn, app=app, body=body)


@router.delete("/catalogue/apps/{app}", status_code=status.HTTP_204_NO_CONTENT)
async def remove_app(conn: ConnDep, _: OperatorCaller, app: AppPath) -> Response:
    """Forget an app: its traffic is unclassified (the user's) from now on."""
    await app_catalogue.remove_app(conn, app)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.put("/price-floors/{currency}/{category}")
async def set_price_floor(
    conn: ConnDep,
    _: OperatorCaller,
    currency: CurrencyPath,
    category: CategoryPath,
    body: PriceFloorSet,
) -> PriceFloorPublic:
    """Set the least price per MB any sponsor's policy may pay for this category in this
    currency, from `effective_from` (default now) on. Policies and terms already set keep
    their prices; a new policy or terms change below it answers `price-below-floor`."""
    return await price_floors.set_floor(
        conn, currency=currency, category=category, body=body, now=datetime.now(UTC)
    )


@router.put("/price-floors/{currency}/{category}/sponsors/{sponsor_id}")
async def set_sponsor_price_floor(
    conn: ConnDep,
    _: OperatorCaller,
    currency: CurrencyPath,
    category: CategoryPath,
    sponsor_id: UUID,
    body: PriceFloorSet,
) -> PriceFloorPublic:
    """Set one sponsor's own floor (a contract price): it overrides the category's floor
    for that sponsor, higher or lower, from `effective_from` (default now) on."""
    return await price_floors.set_floor(
        conn, currency=currency, category=category, sponsor_id=sponsor_id, body=body,
        now=datetime.now(UTC),
    )  # fmt: skip


@router.delete("/price-floors/{currency}/{category}/sponsors/{sponsor_id}")
async def end_sponsor_price_floor(
    conn: ConnDep, _: OperatorCaller, currency: CurrencyPath, category: CategoryPath,
    sponsor_id: UUID,
) -> PriceFloorPublic:  # fmt: skip
    """End a sponsor's own floor from now: the category's floor applies to it again. The
    answer is the version that ends it (its `min_unit_price` is null)."""
    return await price_floors.end_sponsor_floor(
        conn, currency=currency, category=category, sponsor_id=sponsor_id, now=datetime.now(UTC)
    )


@router.get("/price-floors")
async def list_price_floors(
    conn: ConnDep,
    _: OperatorCaller,
    currency: Annotated[Currency | None, Query(description="Only this currency.")] = None,
    category: Annotated[Category | None, Query(description="Only this category.")] = None,
    sponsor_id: Annotated[UUID | None, Query(description="Only this sponsor's own.")] = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Page[PriceFloorPublic]:
    """The rate card: every version of every floor, in the order they were set. The floor a
    sponsor is held to at a moment is its own latest version then, if it has one with a
    price, else the category's latest version then."""
    return await price_floors.floor_page(
        conn, currency=currency, category=category, sponsor_id=sponsor_id, limit=limit,
        cursor=cursor,
    )  # fmt: skip


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
