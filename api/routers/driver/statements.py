"""A driver's own statement: what the wallet paid and what was overage, per SIM and app
category, month by month."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter

from api.deps import CalendarDep, ConnDep, DriverCaller
from api.params import PeriodPath
from billing.documents import statements
from billing.documents.schemas import DriverStatement

router = APIRouter(prefix="/v1/driver/statements", tags=["driver"])


@router.get("/{period}")
async def my_statement(
    conn: ConnDep,
    calendar: CalendarDep,
    caller: DriverCaller,
    period: PeriodPath,
) -> DriverStatement:
    """Your traffic of a month that sponsors did not pay: the bytes your wallet paid, and
    overage bytes with their amount at the tariff's overage price (per SIM and category)."""
    now = datetime.now(UTC)
    return await statements.driver_statement(
        conn,
        driver_id=caller.tenant_id,
        period=calendar.started(period, now=now),
        calendar=calendar,
        now=now,
    )
