"""SQL of what the wallet tells people (wallet.reports): a user's lots and history, a merchant's
data use, breakage, what expires soon. Lists fetch `limit` rows after a key, in the key's order
(flowbill.paging); days and months are those of the billing calendar's zone, passed in."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from uuid import UUID

from psycopg.rows import class_row

from flowbill.db import Connection


@dataclass(frozen=True, slots=True)
class LotView:
    lot_id: int
    source: str
    granted_bytes: int
    remaining_bytes: int
    expires_at: datetime
    expires_on: date
    created_at: datetime


@dataclass(frozen=True, slots=True)
class HistoryRow:
    txn_id: int
    kind: str
    data_bytes: int
    at: datetime
    memo: dict[str, object]


@dataclass(frozen=True, slots=True)
class DataUseRow:
    user_id: str
    granted_bytes: int
    used_bytes: int
    expired_bytes: int
    remaining_bytes: int


@dataclass(frozen=True, slots=True)
class BreakageRow:
    month: date
    funder_kind: str
    funder_id: str
    data_bytes: int


@dataclass(frozen=True, slots=True)
class ExpiringRow:
    day: date
    data_bytes: int
    lots: int


async def unexpired_lots(
    conn: Connection, account_id: int, *, now: datetime, until: datetime | None,
    after: tuple[datetime, int] | None, limit: int, zone: str,
) -> list[LotView]:  # fmt: skip
    """Lots with data left expiring after `now` (and by `until`), earliest expiry first."""
    expires_at, lot_id = after or (None, None)
    async with conn.cursor(row_factory=class_row(LotView)) as cur:
        await cur.execute(
            """
            SELECT lot_id, source, granted AS granted_bytes, remaining AS remaining_bytes,
                   expires_at, (expires_at AT TIME ZONE %(zone)s)::date AS expires_on, created_at
            FROM wallet_lots
            WHERE account_id = %(a)s AND remaining > 0 AND expires_at > %(now)s
              AND (%(until)s::timestamptz IS NULL OR expires_at <= %(until)s::timestamptz)
              AND (%(ae)s::timestamptz IS NULL
                   OR (expires_at, lot_id) > (%(ae)s::timestamptz, %(al)s::bigint))
            ORDER BY expires_at, lot_id LIMIT %(limit)s
            """,
            {"a": account_id, "now": now, "until": until, "ae": expires_at, "al": lot_id,
             "limit": limit, "zone": zone},
        )  # fmt: skip
        return await cur.fetchall()


async def wallet_history(
    conn: Connection, account_id: int, *, after_txn: int | None, limit: int
) -> list[HistoryRow]:
    """The account's transactions with its net movement in each, newest first."""
    async with conn.cursor(row_factory=class_row(HistoryRow)) as cur:
        await cur.execute(
            """
            SELECT t.txn_id, t.kind, sum(e.amount)::bigint AS data_bytes, t.created_at AS at,
                   t.memo
            FROM ledger_entries e JOIN ledger_transactions t USING (txn_id)
            WHERE e.account_id = %s AND (%s::bigint IS NULL OR t.txn_id < %s::bigint)
            GROUP BY t.txn_id ORDER BY t.txn_id DESC LIMIT %s
            """,
            (account_id, after_txn, after_txn, limit),
        )
        return await cur.fetchall()


async def merchant_data_use(
    conn: Connection, merchant_id: UUID, *, after_user: str | None, limit: int
) -> list[DataUseRow]:
    """Per user, by user id: what they were granted of lots the merchant funded, and how much
    of it they used, let expire and still hold."""
    async with conn.cursor(row_factory=class_row(DataUseRow)) as cur:
        await cur.execute(
            """
            WITH lots AS (
                SELECT l.lot_id, l.granted, l.remaining, w.owner AS user_id
                FROM wallet_lots l
                JOIN ledger_accounts f ON f.account_id = l.funded_by
                JOIN ledger_accounts w ON w.account_id = l.account_id
                WHERE ((f.kind = 'campaign' AND f.owner IN (
                           SELECT campaign_id::text FROM campaigns WHERE merchant_id = %(m)s))
                       OR (f.kind = 'merchant_pool' AND f.owner = %(m)s::text))
                  AND (%(after)s::text IS NULL OR w.owner > %(after)s::text)
            ), expired AS (
                SELECT e.lot_id, sum(e.amount) AS bytes
                FROM ledger_entries e JOIN ledger_accounts b USING (account_id)
                WHERE b.kind = 'breakage' AND e.lot_id IN (SELECT lot_id FROM lots)
                GROUP BY e.lot_id
            )
            SELECT user_id, sum(granted)::bigint AS granted_bytes,
                   sum(granted - remaining - coalesce(x.bytes, 0))::bigint AS used_bytes,
                   sum(coalesce(x.bytes, 0))::bigint AS expired_bytes,
                   sum(remaining)::bigint AS remaining_bytes
            FROM lots LEFT JOIN expired x USING (lot_id)
            GROUP BY user_id ORDER BY user_id LIMIT %(limit)s
            """,
            {"m": merchant_id, "after": after_user, "limit": limit},
        )
        return await cur.fetchall()


async def breakage_by_funder(
    conn: Connection, *, since: datetime, until: datetime, zone: str,
    after: tuple[date, str, str] | None, limit: int,
) -> list[BreakageRow]:  # fmt: skip
    """Breakage per month (in `zone`) and per funder, by (month, funder kind, funder id)."""
    month, kind, funder = after or (None, None, None)
    async with conn.cursor(row_factory=class_row(BreakageRow)) as cur:
        await cur.execute(
            """
            SELECT * FROM (
                SELECT date_trunc('month', t.created_at AT TIME ZONE %(zone)s)::date AS month,
                       CASE WHEN f.kind IN ('campaign', 'merchant_pool') THEN 'merchant'
                            ELSE f.kind END AS funder_kind,
                       coalesce(c.merchant_id::text, f.owner) AS funder_id,
                       sum(e.amount)::bigint AS data_bytes
                FROM ledger_entries e
                JOIN ledger_accounts b ON b.account_id = e.account_id AND b.kind = 'breakage'
                JOIN ledger_transactions t ON t.txn_id = e.txn_id
                JOIN wallet_lots l ON l.lot_id = e.lot_id
                JOIN ledger_accounts f ON f.account_id = l.funded_by
                LEFT JOIN campaigns c ON f.kind = 'campaign' AND c.campaign_id::text = f.owner
                WHERE t.created_at >= %(since)s AND t.created_at < %(until)s
                GROUP BY 1, 2, 3
            ) b
            WHERE %(am)s::date IS NULL
               OR (b.month, b.funder_kind, b.funder_id) > (%(am)s::date, %(ak)s, %(af)s)
            ORDER BY b.month, b.funder_kind, b.funder_id LIMIT %(limit)s
            """,
            {"zone": zone, "since": since, "until": until, "am": month, "ak": kind, "af": funder,
             "limit": limit},
        )  # fmt: skip
        return await cur.fetchall()


async def expiring_by_day(
    conn: Connection, *, now: datetime, until: datetime, zone: str, after: date | None, limit: int
) -> list[ExpiringRow]:
    """Unexpired data that expires by `until`, per day (in `zone`), earliest day first."""
    async with conn.cursor(row_factory=class_row(ExpiringRow)) as cur:
        await cur.execute(
            """
            SELECT * FROM (
                SELECT (expires_at AT TIME ZONE %(zone)s)::date AS day,
                       sum(remaining)::bigint AS data_bytes, count(*)::integer AS lots
                FROM wallet_lots
                WHERE remaining > 0 AND expires_at > %(now)s AND expires_at <= %(until)s
                GROUP BY 1
            ) d
            WHERE %(after)s::date IS NULL OR d.day > %(after)s::date
            ORDER BY d.day LIMIT %(limit)s
            """,
            {"zone": zone, "now": now, "until": until, "after": after, "limit": limit},
        )
        return await cur.fetchall()


async def spendable_by_owner(
    conn: Connection, owners: Sequence[str], *, now: datetime
) -> dict[str, int]:
    """Unexpired data in each user's wallet (users without a wallet are absent)."""
    cur = await conn.execute(
        """SELECT a.owner, coalesce(sum(l.remaining), 0)
           FROM ledger_accounts a
           LEFT JOIN wallet_lots l
             ON l.account_id = a.account_id AND l.remaining > 0 AND l.expires_at > %s
           WHERE a.kind = 'user_wallet' AND a.asset = 'data' AND a.owner = ANY(%s)
           GROUP BY a.owner""",
        (now, list(owners)),
    )
    return {r[0]: int(r[1]) for r in await cur.fetchall()}
