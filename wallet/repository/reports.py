"""SQL of what the wallet tells people (wallet.reports): histories, a merchant's data use,
breakage, what expires soon."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from uuid import UUID

from flowbill.db import Connection


async def wallet_history(
    conn: Connection, account_id: int, *, before_txn: int | None, limit: int
) -> list[tuple[int, str, int, datetime, dict[str, object]]]:
    cur = await conn.execute(
        """
        SELECT t.txn_id, t.kind, sum(e.amount), t.created_at, t.memo
        FROM ledger_entries e JOIN ledger_transactions t USING (txn_id)
        WHERE e.account_id = %s AND (%s::bigint IS NULL OR t.txn_id < %s::bigint)
        GROUP BY t.txn_id ORDER BY t.txn_id DESC LIMIT %s
        """,
        (account_id, before_txn, before_txn, limit),
    )
    return [(int(t), str(k), int(a), at, dict(m)) for t, k, a, at, m in await cur.fetchall()]


async def merchant_data_use(
    conn: Connection, merchant_id: UUID, *, limit: int, offset: int
) -> list[tuple[str, int, int, int, int]]:
    """Per user: (user, granted, used, expired, remaining) of lots the merchant funded."""
    cur = await conn.execute(
        """
        WITH lots AS (
            SELECT l.lot_id, l.granted, l.remaining, w.owner AS user_id
            FROM wallet_lots l
            JOIN ledger_accounts f ON f.account_id = l.funded_by
            JOIN ledger_accounts w ON w.account_id = l.account_id
            WHERE (f.kind = 'campaign' AND f.owner IN (
                       SELECT campaign_id::text FROM campaigns WHERE merchant_id = %(m)s))
               OR (f.kind = 'merchant_pool' AND f.owner = %(m)s::text)
        ), expired AS (
            SELECT e.lot_id, sum(e.amount) AS bytes
            FROM ledger_entries e JOIN ledger_accounts b USING (account_id)
            WHERE b.kind = 'breakage' AND e.lot_id IN (SELECT lot_id FROM lots)
            GROUP BY e.lot_id
        )
        SELECT user_id, sum(granted), sum(granted - remaining - coalesce(x.bytes, 0)),
               sum(coalesce(x.bytes, 0)), sum(remaining)
        FROM lots LEFT JOIN expired x USING (lot_id)
        GROUP BY user_id ORDER BY user_id LIMIT %(limit)s OFFSET %(offset)s
        """,
        {"m": merchant_id, "limit": limit, "offset": offset},
    )
    return [(str(u), int(g), int(s), int(x), int(r)) for u, g, s, x, r in await cur.fetchall()]


async def breakage_by_funder(
    conn: Connection, *, since: datetime, until: datetime
) -> list[tuple[date, str, str, int]]:
    """Breakage per month (Asia/Shanghai) and per funder: (month, funder kind, id, bytes)."""
    cur = await conn.execute(
        """
        SELECT date_trunc('month', t.created_at AT TIME ZONE 'Asia/Shanghai')::date,
               CASE WHEN f.kind IN ('campaign', 'merchant_pool') THEN 'merchant'
                    ELSE f.kind END,
               coalesce(c.merchant_id::text, f.owner),
               sum(e.amount)
        FROM ledger_entries e
        JOIN ledger_accounts b ON b.account_id = e.account_id AND b.kind = 'breakage'
        JOIN ledger_transactions t ON t.txn_id = e.txn_id
        JOIN wallet_lots l ON l.lot_id = e.lot_id
        JOIN ledger_accounts f ON f.account_id = l.funded_by
        LEFT JOIN campaigns c ON f.kind = 'campaign' AND c.campaign_id::text = f.owner
        WHERE t.created_at >= %s AND t.created_at < %s
        GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
        """,
        (since, until),
    )
    return [(m, str(k), str(o), int(b)) for m, k, o, b in await cur.fetchall()]


async def expiring_by_day(
    conn: Connection, *, now: datetime, until: datetime
) -> list[tuple[date, int, int]]:
    """Unexpired data that expires before `until`, per day (Asia/Shanghai): (day, bytes, lots)."""
    cur = await conn.execute(
        """
        SELECT (expires_at AT TIME ZONE 'Asia/Shanghai')::date, sum(remaining), count(*)
        FROM wallet_lots WHERE remaining > 0 AND expires_at > %s AND expires_at <= %s
        GROUP BY 1 ORDER BY 1
        """,
        (now, until),
    )
    return [(d, int(b), int(n)) for d, b, n in await cur.fetchall()]


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
