"""The platform operator's wallet desk: the data price, check-in rules, the books, breakage,
what expires soon, and the expiry sweep."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Path, Query

from api.deps import ConnDep, OperatorCaller
from flowbill.errors import InvalidInput
from wallet import promotions, reports, service
from wallet.schemas import (
    BooksReport,
    BreakageLine,
    CheckInRulesPublic,
    CheckInRulesUpdate,
    Currency,
    DataPrice,
    DataPriceUpdate,
    ExpiringDay,
    SweepResult,
)

router = APIRouter(prefix="/v1/operator/wallet", tags=["operator"])


@router.get("/prices")
async def prices(conn: ConnDep, _: OperatorCaller) -> list[DataPrice]:
    """The wholesale price merchants pay for data, per currency."""
    return await promotions.data_prices(conn)


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
    _: OperatorCaller,
    since: Annotated[date, Query(description="First day (Asia/Shanghai), inclusive.")],
    until: Annotated[date, Query(description="Last day (Asia/Shanghai), exclusive.")],
) -> list[BreakageLine]:
    """Data that expired unused (or came back after its lot expired), per month and funder."""
    if until <= since or (until - since).days > 3660:
        raise InvalidInput("until must be after since, at most ten years later")
    return await reports.breakage(conn, since=since, until=until)


@router.get("/expiring")
async def expiring(
    conn: ConnDep,
    _: OperatorCaller,
    within_days: Annotated[int, Query(ge=1, le=730)] = 30,
) -> list[ExpiringDay]:
    """Data in users' wallets that expires within the coming days, per day."""
    return await reports.expiring(conn, now=datetime.now(UTC), within=timedelta(days=within_days))


@router.post("/expiry-sweeps")
async def sweep(conn: ConnDep, _: OperatorCaller) -> SweepResult:
    """Move what is left in expired lots to breakage now (the sweep also runs on a schedule)."""
    return SweepResult(lots_expired=await service.expire_lots(conn, now=datetime.now(UTC)))
