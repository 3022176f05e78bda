"""The platform operator's wallet desk: the data price, check-in rules, carriers, the exchange
catalogue, the books, breakage, what expires soon, the expiry sweep and reconciliation."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Path, Query, status

from api.deps import (
    CalendarDep,
    ConnDep,
    GatewaysDep,
    OperatorCaller,
    PoolDep,
    SettingsDep,
    providers,
)
from api.params import Cursor, Limit
from flowbill.errors import InvalidInput
from flowbill.paging import DEFAULT_LIMIT, Page
from wallet import exchange, promotions, reports, service, withdrawals
from wallet.schemas import (
    BooksReport,
    BreakageLine,
    CarrierConfig,
    CarrierId,
    CarrierPublic,
    CatalogueItemCreate,
    CatalogueItemPublic,
    CatalogueItemUpdate,
    CheckInRulesPublic,
    CheckInRulesUpdate,
    Currency,
    DataPrice,
    DataPriceUpdate,
    ExpiringDay,
    ReconcileReport,
    SweepResult,
)

router = APIRouter(prefix="/v1/operator/wallet", tags=["operator"])


@router.get("/prices")
async def prices(
    conn: ConnDep, _: OperatorCaller, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> Page[DataPrice]:
    """The wholesale price merchants pay for data, per currency."""
    return await promotions.data_prices(conn, limit=limit, cursor=cursor)


@router.put("/prices/{currency}")
async def set_price(
    conn: ConnDep,
    _: OperatorCaller,
    currency: Annotated[Currency, Path(description="ISO 4217, e.g. CNY.")],
    body: DataPriceUpdate,
) -> DataPrice:
    """Set the price per 100 MB; purchases already made keep theirs."""
    return await promotions.set_data_price(
        conn, currency=currency, minor_per_100mb=body.minor_per_100mb
    )


@router.get("/check-in-rules")
async def check_in_rules(conn: ConnDep, _: OperatorCaller) -> CheckInRulesPublic:
    """The check-in tool's rules."""
    return await promotions.check_in_rules_public(conn)


@router.put("/check-in-rules")
async def set_check_in_rules(
    conn: ConnDep, _: OperatorCaller, body: CheckInRulesUpdate
) -> CheckInRulesPublic:
    """Change the check-in rules; running streaks continue under the new ones."""
    return await promotions.set_check_in_rules(conn, body)


@router.get("/ledger-check")
async def ledger_check(conn: ConnDep, _: OperatorCaller) -> BooksReport:
    """Prove the books: balanced transactions, true cached balances, lots that add up."""
    problems = await service.check_books(conn)
    return BooksReport(balanced=not problems, problems=problems)


@router.get("/breakage")
async def breakage(
    conn: ConnDep,
    calendar: CalendarDep,
    _: OperatorCaller,
    since: Annotated[date, Query(description="First day (billing time zone), inclusive.")],
    until: Annotated[date, Query(description="Last day (billing time zone), exclusive.")],
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Page[BreakageLine]:
    """Data that expired unused (or came back after its lot expired), per month and funder."""
    if until <= since or (until - since).days > 3660:
        raise InvalidInput("until must be after since, at most ten years later")
    return await reports.breakage(
        conn, since=since, until=until, calendar=calendar, limit=limit,
        cursor=cursor,
    )  # fmt: skip


@router.get("/expiring")
async def expiring(
    conn: ConnDep,
    calendar: CalendarDep,
    _: OperatorCaller,
    within_days: Annotated[int, Query(ge=1, le=730)] = 30,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Page[ExpiringDay]:
    """Data in users' wallets that expires within the coming days, per day."""
    return await reports.expiring(
        conn, now=datetime.now(UTC), within=timedelta(days=within_days),
        calendar=calendar, limit=limit, cursor=cursor,
    )  # fmt: skip


@router.post("/expiry-sweeps")
async def sweep(conn: ConnDep, _: OperatorCaller) -> SweepResult:
    """Move what is left in expired lots to breakage now (the sweep also runs on a schedule)."""
    return SweepResult(lots_expired=await service.expire_lots(conn, now=datetime.now(UTC)))


@router.get("/carriers")
async def carriers(
    conn: ConnDep, _: OperatorCaller, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> Page[CarrierPublic]:
    """Carriers and their packages."""
    return await withdrawals.carriers(conn, limit=limit, cursor=cursor)


@router.put("/carriers/{carrier_id}")
async def set_carrier(
    conn: ConnDep,
    _: OperatorCaller,
    carrier_id: Annotated[CarrierId, Path(description="e.g. cmcc-js (a carrier in a province).")],
    body: CarrierConfig,
) -> CarrierPublic:
    """Add or change a carrier: the packages it sells, the minimum top-up, transfer-in."""
    return await withdrawals.set_carrier(conn, carrier_id=carrier_id, config=body)


@router.get("/catalogue")
async def catalogue(
    conn: ConnDep, _: OperatorCaller, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> Page[CatalogueItemPublic]:
    """Every catalogue item, withdrawn ones included, by kind and name."""
    return await exchange.catalogue(conn, active_only=False, limit=limit, cursor=cursor)


@router.post("/catalogue", status_code=status.HTTP_201_CREATED)
async def add_item(
    conn: ConnDep, _: OperatorCaller, body: CatalogueItemCreate
) -> CatalogueItemPublic:
    """Put an item in the exchange catalogue."""
    return await exchange.add_item(conn, body)


@router.patch("/catalogue/{item_id}")
async def change_item(
    conn: ConnDep, _: OperatorCaller, item_id: UUID, body: CatalogueItemUpdate
) -> CatalogueItemPublic:
    """Restock an item, make its stock unlimited, withdraw it or list it again."""
    return await exchange.change_item(conn, item_id=item_id, change=body)


@router.post("/reconciliations")
async def reconcile(
    pool: PoolDep, gateways: GatewaysDep, settings: SettingsDep, _: OperatorCaller
) -> dict[str, ReconcileReport]:
    """Settle carrier orders, exchange orders and refunds left open past the grace period by
    asking the gateways (the `flowbill reconcile` command does the same on a schedule)."""
    now = datetime.now(UTC)
    grace = timedelta(seconds=settings.reconcile_grace_seconds)
    return {
        "carrier_orders": await withdrawals.reconcile(pool, gateways, now=now, grace=grace),
        "exchange_orders": await exchange.reconcile(
            pool, providers(settings, gateways), now=now, grace=grace
        ),
    }
