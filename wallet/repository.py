"""SQL of the wallet ledger: accounts, transactions, entries, lots."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from psycopg.rows import class_row

from flowbill.db import Connection


@dataclass(frozen=True, slots=True)
class Leg:
    """One side of a transaction: a signed amount on an account (and the lot, for data)."""

    account_id: int
    asset: str
    amount: int
    lot_id: int | None = None


@dataclass(frozen=True, slots=True)
class LotRow:
    lot_id: int
    account_id: int
    source: str
    funded_by: int | None
    granted: int
    remaining: int
    expires_at: datetime
    created_txn_id: int
    created_at: datetime


_LOT_COLUMNS = (
    "lot_id, account_id, source, funded_by, granted, remaining, expires_at, created_txn_id,"
    " created_at"
)


async def ensure_account(conn: Connection, *, kind: str, owner: str, asset: str) -> int:
    cur = await conn.execute(
        """
        WITH made AS (
            INSERT INTO ledger_accounts (kind, owner, asset) VALUES (%(k)s, %(o)s, %(a)s)
            ON CONFLICT (kind, owner, asset) DO NOTHING RETURNING account_id
        )
        SELECT account_id FROM made
        UNION ALL
        SELECT account_id FROM ledger_accounts
        WHERE kind = %(k)s AND owner = %(o)s AND asset = %(a)s
        """,
        {"k": kind, "o": owner, "a": asset},
    )
    row = await cur.fetchone()
    if row is None:
        # Another transaction created it while we waited on the conflict: the statement's
        # snapshot predates that commit, a new statement sees it.
        found = await find_account(conn, kind=kind, owner=owner, asset=asset)
        assert found is not None
        return found
    return int(row[0])


async def find_account(conn: Connection, *, kind: str, owner: str, asset: str) -> int | None:
    cur = await conn.execute(
        "SELECT account_id FROM ledger_accounts WHERE kind = %s AND owner = %s AND asset = %s",
        (kind, owner, asset),
    )
    row = await cur.fetchone()
    return int(row[0]) if row else None


async def lock_account(conn: Connection, account_id: int) -> int:
    """Lock the account row (serialising its debits) and return its cached balance."""
    cur = await conn.execute(
        "SELECT balance FROM ledger_accounts WHERE account_id = %s FOR UPDATE", (account_id,)
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def claim_key(
    conn: Connection, *, key: str, kind: str, digest: bytes, reverses: int | None = None
) -> tuple[int, bool, str, bytes]:
    """The transaction for the key: (txn id, created now, its kind, its request digest).

    A concurrent request with the same key waits here until the first one commits or
    rolls back, so a key is only ever acted on once.
    """
    cur = await conn.execute(
        """
        INSERT INTO ledger_transactions (idempotency_key, kind, request_digest, reverses_txn_id)
        VALUES (%s, %s, %s, %s)
        ON CONFLICT (idempotency_key) DO NOTHING
        RETURNING txn_id
        """,
        (key, kind, digest, reverses),
    )
    row = await cur.fetchone()
    if row is not None:
        return int(row[0]), True, kind, digest
    cur = await conn.execute(
        "SELECT txn_id, kind, request_digest FROM ledger_transactions WHERE idempotency_key = %s",
        (key,),
    )
    found = await cur.fetchone()
    assert found is not None
    return int(found[0]), False, str(found[1]), bytes(found[2])


async def post_legs(conn: Connection, txn_id: int, legs: Sequence[Leg]) -> None:
    """Write the entries and move the cached balances (in account order: no deadlocks)."""
    async with conn.cursor() as cur:
        await cur.executemany(
            "INSERT INTO ledger_entries (txn_id, account_id, asset, amount, lot_id)"
            " VALUES (%s, %s, %s, %s, %s)",
            [(txn_id, leg.account_id, leg.asset, leg.amount, leg.lot_id) for leg in legs],
        )
        deltas: dict[int, int] = {}
        for leg in legs:
            deltas[leg.account_id] = deltas.get(leg.account_id, 0) + leg.amount
        for account_id in sorted(deltas):
            await cur.execute(
                "UPDATE ledger_accounts SET balance = balance + %s WHERE account_id = %s",
                (deltas[account_id], account_id),
            )


async def insert_lot(
    conn: Connection,
    *,
    account_id: int,
    source: str,
    funded_by: int | None,
    amount: int,
    expires_at: datetime,
    txn_id: int,
) -> int:
    cur = await conn.execute(
        """
        INSERT INTO wallet_lots (account_id, source, funded_by, granted, remaining, expires_at,
                                 created_txn_id)
        VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING lot_id
        """,
        (account_id, source, funded_by, amount, amount, expires_at, txn_id),
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def spendable_lots(conn: Connection, account_id: int, *, now: datetime) -> list[LotRow]:
    """Unexpired lots with data left, earliest expiry first, then oldest; locked."""
    async with conn.cursor(row_factory=class_row(LotRow)) as cur:
        await cur.execute(
            f"""SELECT {_LOT_COLUMNS} FROM wallet_lots
                WHERE account_id = %s AND remaining > 0 AND expires_at > %s
                ORDER BY expires_at, lot_id FOR UPDATE""",
            (account_id, now),
        )
        return await cur.fetchall()


async def change_lot(conn: Connection, lot_id: int, delta: int) -> None:
    await conn.execute(
        "UPDATE wallet_lots SET remaining = remaining + %s WHERE lot_id = %s", (delta, lot_id)
    )


async def lots_of(conn: Connection, account_id: int, *, with_empty: bool) -> list[LotRow]:
    async with conn.cursor(row_factory=class_row(LotRow)) as cur:
        await cur.execute(
            f"""SELECT {_LOT_COLUMNS} FROM wallet_lots
                WHERE account_id = %s AND (%s OR remaining > 0)
                ORDER BY expires_at, lot_id""",
            (account_id, with_empty),
        )
        return await cur.fetchall()


async def lots_by_id(conn: Connection, lot_ids: Sequence[int]) -> dict[int, LotRow]:
    async with conn.cursor(row_factory=class_row(LotRow)) as cur:
        await cur.execute(
            f"SELECT {_LOT_COLUMNS} FROM wallet_lots WHERE lot_id = ANY(%s) FOR UPDATE",
            (list(lot_ids),),
        )
        return {lot.lot_id: lot for lot in await cur.fetchall()}


async def expired_lots(conn: Connection, *, now: datetime, limit: int) -> list[LotRow]:
    """Expired lots with data left; rows another sweep holds are skipped."""
    async with conn.cursor(row_factory=class_row(LotRow)) as cur:
        await cur.execute(
            f"""SELECT {_LOT_COLUMNS} FROM wallet_lots
                WHERE remaining > 0 AND expires_at <= %s
                ORDER BY lot_id LIMIT %s FOR UPDATE SKIP LOCKED""",
            (now, limit),
        )
        return await cur.fetchall()


async def entries_of(conn: Connection, txn_id: int) -> list[Leg]:
    cur = await conn.execute(
        "SELECT account_id, asset, amount, lot_id FROM ledger_entries WHERE txn_id = %s"
        " ORDER BY entry_id",
        (txn_id,),
    )
    return [
        Leg(int(a), str(s), int(m), None if lot is None else int(lot))
        for a, s, m, lot in await cur.fetchall()
    ]


async def transaction_kind(conn: Connection, txn_id: int) -> str | None:
    cur = await conn.execute("SELECT kind FROM ledger_transactions WHERE txn_id = %s", (txn_id,))
    row = await cur.fetchone()
    return str(row[0]) if row else None


async def refunded_per_lot(conn: Connection, spend_txn_id: int) -> dict[int, int]:
    """Bytes already given back per lot by refunds of one spend."""
    cur = await conn.execute(
        """
        SELECT e.lot_id, sum(e.amount) FROM ledger_entries e
        JOIN ledger_transactions t USING (txn_id)
        WHERE t.reverses_txn_id = %s AND e.lot_id IS NOT NULL AND e.amount > 0
        GROUP BY e.lot_id
        """,
        (spend_txn_id,),
    )
    return {int(lot): int(total) for lot, total in await cur.fetchall()}


async def account_balance(conn: Connection, account_id: int) -> int:
    cur = await conn.execute(
        "SELECT balance FROM ledger_accounts WHERE account_id = %s", (account_id,)
    )
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def books_problems(conn: Connection) -> list[str]:
    """Every way the books can be wrong, as sentences; empty when they are right."""
    checks = {
        "unbalanced transaction": """
            SELECT format('txn %s %s sums to %s', txn_id, asset, sum(amount))
            FROM ledger_entries GROUP BY txn_id, asset HAVING sum(amount) <> 0""",
        "entry in the wrong asset": """
            SELECT format('entry %s is %s on a %s account', e.entry_id, e.asset, a.asset)
            FROM ledger_entries e JOIN ledger_accounts a USING (account_id)
            WHERE e.asset <> a.asset""",
        "cached balance differs from entries": """
            SELECT format('account %s caches %s, entries sum to %s', a.account_id, a.balance,
                          coalesce(s.total, 0))
            FROM ledger_accounts a
            LEFT JOIN (SELECT account_id, sum(amount) AS total FROM ledger_entries
                       GROUP BY account_id) s USING (account_id)
            WHERE a.balance <> coalesce(s.total, 0)""",
        "wallet differs from its lots": """
            SELECT format('wallet %s holds %s, its lots %s', a.account_id, a.balance,
                          coalesce(l.total, 0))
            FROM ledger_accounts a
            LEFT JOIN (SELECT account_id, sum(remaining) AS total FROM wallet_lots
                       GROUP BY account_id) l USING (account_id)
            WHERE a.kind = 'user_wallet' AND a.balance <> coalesce(l.total, 0)""",
        "lot differs from its entries": """
            SELECT format('lot %s has %s left, its entries %s', l.lot_id, l.remaining,
                          coalesce(s.total, 0))
            FROM wallet_lots l
            LEFT JOIN (SELECT e.lot_id, sum(e.amount) AS total FROM ledger_entries e
                       JOIN ledger_accounts a USING (account_id)
                       WHERE a.kind = 'user_wallet' AND e.lot_id IS NOT NULL
                       GROUP BY e.lot_id) s USING (lot_id)
            WHERE l.remaining <> coalesce(s.total, 0)""",
        "asset does not sum to zero": """
            SELECT format('%s sums to %s', asset, sum(balance))
            FROM ledger_accounts GROUP BY asset HAVING sum(balance) <> 0""",
    }
    problems: list[str] = []
    for name, sql in checks.items():
        cur = await conn.execute(sql)
        problems.extend(f"{name}: {text}" for (text,) in await cur.fetchall())
    return problems
