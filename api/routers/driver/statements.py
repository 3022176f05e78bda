"""A driver's own statement: what the wallet paid and what was overage, per SIM and app
category, month by month."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter

from api.deps import ConnDep, DriverCaller, SettingsDep
from api.params import PeriodPath
from billing.documents import statements
from billing.documents.schemas import DriverStatement
from flowbill.periods import Calendar

router = APIRouter(prefix="/v1/driver/statements", tags=["driver"])


@router.get("/{period}")
async def my_statement(
    conn: ConnDep,
    settings: SettingsDep,
    caller: DriverCaller,
    period: PeriodPath,
) -> DriverStatement:
    """Your traffic of a month that sponsors did not pay: the bytes your wallet paid, and
    overage bytes with their amount at the tariff's overage price (per SIM and category)."""
    now = datetime.now(UTC)
    calendar = Calendar.from_settings(settings)
    return await statements.driver_statement(
        conn,
        driver_id=caller.tenant_id,
        period=calendar.started(period, now=now),
        calendar=calendar,
        now=now,
    )
