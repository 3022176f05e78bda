"""Drivers and card holders: their wallet's balance, lots with expiry dates, and history."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import ConnDep, DriverCaller
from wallet import reports
from wallet.schemas import BalancePublic, HistoryEntry, LotPublic

router = APIRouter(prefix="/v1/wallet", tags=["wallet"])


@router.get("")
async def balance(conn: ConnDep, caller: DriverCaller) -> BalancePublic:
    """Your spendable data, what expires within 30 days, and when the next lot expires."""
    return await reports.balance(conn, user=str(caller.tenant_id), now=datetime.now(UTC))


@router.get("/lots")
async def lots(
    conn: ConnDep,
    caller: DriverCaller,
    expiring_within_days: Annotated[int | None, Query(ge=1, le=730)] = None,
) -> list[LotPublic]:
    """Your lots of data, earliest expiry first ("50 MB expire on 31 Dec")."""
    within = None if expiring_within_days is None else timedelta(days=expiring_within_days)
    return await reports.lots(
        conn, user=str(caller.tenant_id), now=datetime.now(UTC), within=within
    )


@router.get("/history")
async def history(
    conn: ConnDep,
    caller: DriverCaller,
    before_txn: Annotated[int | None, Query(ge=1, le=2**62)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> list[HistoryEntry]:
    """Every grant, check-in, top-up, exchange, refund and expiry of your wallet, newest first.

    Page with `before_txn` set to the last `txn_id` you received.
    """
    return await reports.history(
        conn, user=str(caller.tenant_id), before_txn=before_txn, limit=limit
    )
