"""What the wallet tells people: a user's balance, lots and history; a merchant's data use;
the operator's breakage and what expires soon."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from uuid import UUID

from flowbill.db import Connection
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
from wallet.streaks import CHECK_IN_ZONE


async def _wallet(conn: Connection, user: str) -> int | None:
    return await ledger.find_account(
        conn, kind=AccountKind.USER_WALLET.value, owner=user, asset=DATA
    )


def _public_lot(lot: ledger.LotRow) -> LotPublic:
    return LotPublic(
        lot_id=lot.lot_id,
        source=lot.source,
        granted_bytes=lot.granted,
        remaining_bytes=lot.remaining,
        expires_at=lot.expires_at,
        expires_on=lot.expires_at.astimezone(CHECK_IN_ZONE).date(),
        created_at=lot.created_at,
    )


async def lots(
    conn: Connection, *, user: str, now: datetime, within: timedelta | None = None
) -> list[LotPublic]:
    """A user's unexpired lots with data left, earliest expiry first (optionally only those
    expiring within `within`)."""
    wallet = await _wallet(conn, user)
    if wallet is None:
        return []
    rows = await ledger.lots_of(conn, wallet, with_empty=False)
    return [
        _public_lot(lot)
        for lot in rows
        if lot.expires_at > now and (within is None or lot.expires_at <= now + within)
    ]


async def balance(conn: Connection, *, user: str, now: datetime) -> BalancePublic:
    """Spendable bytes (unexpired lots), what expires within 30 days and the next expiry."""
    held = await lots(conn, user=user, now=now)
    soon = now + timedelta(days=30)
    return BalancePublic(
        data_bytes=sum(lot.remaining_bytes for lot in held),
        expiring_within_30_days_bytes=sum(
            lot.remaining_bytes for lot in held if lot.expires_at <= soon
        ),
        next_expiry=held[0].expires_at if held else None,
    )


async def history(
    conn: Connection, *, user: str, before_txn: int | None, limit: int
) -> list[HistoryEntry]:
    """Every movement of a user's wallet, newest first."""
    wallet = await _wallet(conn, user)
    if wallet is None:
        return []
    return [
        HistoryEntry(txn_id=t, kind=k, data_bytes=a, at=at, memo=m)
        for t, k, a, at, m in await repository.wallet_history(
            conn, wallet, before_txn=before_txn, limit=limit
        )
    ]


async def merchant_data_use(
    conn: Connection, *, merchant_id: UUID, limit: int, offset: int
) -> list[MerchantDataUse]:
    """Who received the merchant's data, and how much of it they used, let expire, still hold."""
    return [
        MerchantDataUse(
            user_id=u, granted_bytes=g, used_bytes=s, expired_bytes=x, remaining_bytes=r
        )
        for u, g, s, x, r in await repository.merchant_data_use(
            conn, merchant_id, limit=limit, offset=offset
        )
    ]


async def breakage(conn: Connection, *, since: date, until: date) -> list[BreakageLine]:
    """Breakage per month and per funder, for days [since, until) in Asia/Shanghai."""
    start = datetime.combine(since, datetime.min.time(), CHECK_IN_ZONE)
    end = datetime.combine(until, datetime.min.time(), CHECK_IN_ZONE)
    return [
        BreakageLine(month=m, funder_kind=k, funder_id=o, data_bytes=b)
        for m, k, o, b in await repository.breakage_by_funder(conn, since=start, until=end)
    ]


async def expiring(conn: Connection, *, now: datetime, within: timedelta) -> list[ExpiringDay]:
    """Data in all wallets that expires within `within`, per day."""
    return [
        ExpiringDay(day=d, data_bytes=b, lots=n)
        for d, b, n in await repository.expiring_by_day(conn, now=now, until=now + within)
    ]


async def spendable(conn: Connection, *, users: list[str], now: datetime) -> dict[str, int]:
    """Unexpired bytes in each user's wallet, for many users at once (0 without a wallet)."""
    found = await repository.spendable_by_owner(conn, users, now=now)
    return {user: found.get(user, 0) for user in users}
