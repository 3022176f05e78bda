"""What the wallet tells people: a user's balance, lots and history; a merchant's data use;
the operator's breakage and what expires soon. Days and months are the billing calendar's."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from uuid import UUID

from flowbill import paging
from flowbill.db import Connection
from flowbill.paging import Page
from flowbill.periods import Calendar
from wallet import service
from wallet.repository import ledger
from wallet.repository import reports as repository
from wallet.schemas import (
    BalancePublic,
    BreakageLine,
    ExpiringDay,
    HistoryEntry,
    LotPublic,
    MerchantDataUse,
)
from wallet.service import DATA, AccountKind


async def _wallet(conn: Connection, user: str) -> int | None:
    return await ledger.find_account(
        conn, kind=AccountKind.USER_WALLET.value, owner=user, asset=DATA
    )


async def lots(
    conn: Connection, *, user: str, now: datetime, calendar: Calendar, limit: int,
    cursor: str | None, within: timedelta | None = None,
) -> Page[LotPublic]:  # fmt: skip
    """A user's unexpired lots with data left, earliest expiry first (optionally only those
    expiring within `within`)."""
    after = None if cursor is None else paging.decode_cursor(cursor, (datetime, int), scope="lots")
    wallet = await _wallet(conn, user)
    rows = [] if wallet is None else await repository.unexpired_lots(
        conn, wallet, now=now, until=None if within is None else now + within,
        after=after, limit=limit + 1, zone=calendar.time_zone,
    )  # fmt: skip
    return paging.page(
        [LotPublic.model_validate(row) for row in rows],
        limit=limit, key=lambda lot: (lot.expires_at, lot.lot_id), scope="lots",
    )  # fmt: skip


async def balance(conn: Connection, *, user: str, now: datetime) -> BalancePublic:
    """Spendable bytes (unexpired lots), what expires within 30 days and the next expiry."""
    held = [lot for lot in await service.lots(conn, user=user) if lot.expires_at > now]
    soon = now + timedelta(days=30)
    return BalancePublic(
        data_bytes=sum(lot.remaining for lot in held),
        expiring_within_30_days_bytes=sum(lot.remaining for lot in held if lot.expires_at <= soon),
        next_expiry=held[0].expires_at if held else None,
    )


async def history(
    conn: Connection, *, user: str, limit: int, cursor: str | None
) -> Page[HistoryEntry]:
    """Every movement of a user's wallet, newest first."""
    after = None if cursor is None else paging.decode_cursor(cursor, (int,), scope="history")
    wallet = await _wallet(conn, user)
    rows = [] if wallet is None else await repository.wallet_history(
        conn, wallet, after_txn=None if after is None else after[0], limit=limit + 1
    )  # fmt: skip
    return paging.page(
        [HistoryEntry.model_validate(row) for row in rows],
        limit=limit, key=lambda entry: (entry.txn_id,), scope="history",
    )  # fmt: skip


async def merchant_data_use(
    conn: Connection, *, merchant_id: UUID, limit: int, cursor: str | None
) -> Page[MerchantDataUse]:
    """Who received the merchant's data, and how much of it they used, let expire, still hold."""
    after = None if cursor is None else paging.decode_cursor(cursor, (str,), scope="data-use")
    rows = await repository.merchant_data_use(
        conn, merchant_id, after_user=None if after is None else after[0], limit=limit + 1
    )
    return paging.page(
        [MerchantDataUse.model_validate(row) for row in rows],
        limit=limit, key=lambda use: (use.user_id,), scope="data-use",
    )  # fmt: skip


async def breakage(
    conn: Connection, *, since: date, until: date, calendar: Calendar, limit: int,
    cursor: str | None,
) -> Page[BreakageLine]:  # fmt: skip
    """Breakage per month and per funder, for the calendar's days [since, until)."""
    after = (
        None if cursor is None else paging.decode_cursor(cursor, (date, str, str), scope="breakage")
    )
    start = datetime.combine(since, datetime.min.time(), calendar.zone)
    end = datetime.combine(until, datetime.min.time(), calendar.zone)
    rows = await repository.breakage_by_funder(
        conn, since=start, until=end, zone=calendar.time_zone, after=after, limit=limit + 1
    )
    return paging.page(
        [BreakageLine.model_validate(row) for row in rows],
        limit=limit, key=lambda line: (line.month, line.funder_kind, line.funder_id),
        scope="breakage",
    )  # fmt: skip


async def expiring(
    conn: Connection, *, now: datetime, within: timedelta, calendar: Calendar, limit: int,
    cursor: str | None,
) -> Page[ExpiringDay]:  # fmt: skip
    """Data in all wallets that expires within `within`, per calendar day."""
    after = None if cursor is None else paging.decode_cursor(cursor, (date,), scope="expiring")
    rows = await repository.expiring_by_day(
        conn, now=now, until=now + within, zone=calendar.time_zone,
        after=None if after is None else after[0], limit=limit + 1,
    )  # fmt: skip
    return paging.page(
        [ExpiringDay.model_validate(row) for row in rows],
        limit=limit, key=lambda day: (day.day,), scope="expiring",
    )  # fmt: skip


async def spendable(conn: Connection, *, users: list[str], now: datetime) -> dict[str, int]:
    """Unexpired bytes in each user's wallet, for many users at once (0 without a wallet)."""
    found = await repository.spendable_by_owner(conn, users, now=now)
    return {user: found.get(user, 0) for user in users}
