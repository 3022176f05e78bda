"""SQL of the wallet ledger (wallet.service): accounts, transactions, entries, lots."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from psycopg.rows import class_row
from psycopg.types.json import Jsonb

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


# Accounts whose balance is cached on their row (and locked for a debit): the ones that hold
# something for someone and may never go below zero. The others (the platform's own, outside
# parties, data in flight) are touched by every redemption; updating one row for them would
# serialise all redemptions, so their balance is the sum of their entries.
CACHED_KINDS = ("user_wallet", "merchant_pool", "campaign")


async def ensure_account(conn: Connection, *, kind: str, owner: str, asset: str) -> int:
    found = await find_account(conn, kind=kind, owner=owner, asset=asset)
    if found is not None:
        return found
    cur = await conn.execute(
        """
        INSERT INTO ledger_accounts (kind, owner, asset) VALUES (%s, %s, %s)
        ON CONFLICT (kind, owner, asset) DO NOTHING RETURNING account_id
        """,
        (kind, owner, asset),
    )
    row = await cur.fetchone()
    if row is None:
        # Another transaction created it meanwhile: a new statement sees its commit.
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
    conn: Connection,
    *,
    key: str,
    kind: str,
    digest: bytes,
    reverses: int | None = None,
    memo: dict[str, object] | None = None,
) -> tuple[int, bool, str, bytes]:
    """The transaction for the key: (txn id, created now, its kind, its request digest).

    A concurrent request with the same key waits here until the first one commits or
    rolls back, so a key is only ever acted on once.
    """
    cur = await conn.execute(
        """
        INSERT INTO ledger_transactions (idempotency_key, kind, request_digest, reverses_txn_id,
                                         memo)
        VALUES (%s, %s, %s, %s, %s)
        ON CONFLICT (idempotency_key) DO NOTHING
        RETURNING txn_id
        """,
        (key, kind, digest, reverses, Jsonb(memo or {})),
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


async def claim_keys(
    conn: Connection, *, kind: str, claims: Sequence[tuple[str, bytes, dict[str, object]]]
) -> dict[str, int]:
    """Claim many (key, digest, memo) at once: {key: txn id} of those created by this call.
    The keys this leaves out existed already (see claim_key for what they hold)."""
    if not claims:
        return {}
    cur = await conn.execute(
        """
        INSERT INTO ledger_transactions (idempotency_key, kind, request_digest, memo)
        SELECT k, %s, d, m FROM unnest(%s::text[], %s::bytea[], %s::jsonb[]) AS c(k, d, m)
        ON CONFLICT (idempotency_key) DO NOTHING
        RETURNING idempotency_key, txn_id
        """,
        (
            kind,
            [key for key, _, _ in claims],
            [digest for _, digest, _ in claims],
            [Jsonb(memo) for _, _, memo in claims],
        ),
    )
    return {str(key): int(txn_id) for key, txn_id in await cur.fetchall()}


async def wallets_of(conn: Connection, owners: Sequence[str]) -> dict[str, int]:
    """The data wallets of many users: {owner: account id}; users without one are left out."""
    cur = await conn.execute(
        """SELECT owner, account_id FROM ledger_accounts
           WHERE kind = 'user_wallet' AND asset = 'data' AND owner = ANY(%s)""",
        (list(owners),),
    )
    return {str(owner): int(account) for owner, account in await cur.fetchall()}


async def lock_wallets(conn: Connection, owners: Sequence[str]) -> None:
    """Lock the data wallets of many users, in account order (the order `take_from_wallets`
    and `post_legs` lock in: no deadlocks); users without a wallet are left out."""
    await conn.execute(
        """SELECT account_id FROM ledger_accounts
           WHERE kind = 'user_wallet' AND asset = 'data' AND owner = ANY(%s)
           ORDER BY account_id FOR UPDATE""",
        (list(owners),),
    )


async def take_from_wallets(
    conn: Connection,
    takes: Sequence[tuple[int, int, int]],
    *,
    destination: int,
    now: datetime,
) -> dict[int, list[tuple[int, int]]]:
    """wallet_take (migrations/0007) for many (txn id, wallet, amount) in one statement, in
    the order given (callers sort by wallet: one lock order, no deadlocks): {txn id: [(lot id,
    bytes taken)]}; a transaction left out found its wallet holding too little."""
    taken: dict[int, list[tuple[int, int]]] = {}
    if not takes:
        return taken
    cur = await conn.execute(
        """
        SELECT d.txn, t.taken_lot_id, t.taken
        FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[]) WITH ORDINALITY
             AS d(txn, wallet, amount, n)
        CROSS JOIN LATERAL wallet_take(d.txn, d.wallet, d.amount, %s, %s) AS t
        """,
        (
            [txn for txn, _, _ in takes],
            [wallet for _, wallet, _ in takes],
            [amount for _, _, amount in takes],
            destination,
            now,
        ),
    )
    for txn, lot, amount in await cur.fetchall():
        taken.setdefault(int(txn), []).append((int(lot), int(amount)))
    return taken


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
        ordered = sorted(deltas)
        # One statement; rows are locked in account order, so two postings cannot deadlock.
        await cur.execute(
            """
            UPDATE ledger_accounts a SET balance = a.balance + d.delta
            FROM (SELECT * FROM unnest(%s::bigint[], %s::bigint[]) AS u(account_id, delta)
                  ORDER BY account_id) d
            WHERE a.account_id = d.account_id AND a.kind = ANY(%s)
            """,
            (ordered, [deltas[a] for a in ordered], list(CACHED_KINDS)),
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


async def take_from_wallet(
    conn: Connection, *, txn_id: int, wallet: int, amount: int, destination: int, now: datetime
) -> list[tuple[int, int]]:
    """Take `amount` from the wallet's lots into `destination` under the transaction
    (migrations/0007): [(lot id, bytes taken)], or [] when the wallet holds too little."""
    cur = await conn.execute(
        "SELECT taken_lot_id, taken FROM wallet_take(%s, %s, %s, %s, %s)",
        (txn_id, wallet, amount, destination, now),
    )
    return [(int(lot), int(taken)) for lot, taken in await cur.fetchall()]


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


async def lock_wallets_with_expired_lots(
    conn: Connection, *, now: datetime, limit: int
) -> list[int]:
    """Lock, in account order, the wallets holding the first `limit` expired lots with data
    left, and return them. A lot is locked only under its wallet's lock (as wallet_take and
    refunds do), so a sweep never waits for a wallet while holding a lot someone else needs."""
    cur = await conn.execute(
        """
        SELECT account_id FROM ledger_accounts
        WHERE account_id IN (SELECT account_id FROM wallet_lots
                             WHERE remaining > 0 AND expires_at <= %s ORDER BY lot_id LIMIT %s)
        ORDER BY account_id FOR UPDATE
        """,
        (now, limit),
    )
    return [int(account) for (account,) in await cur.fetchall()]


async def expired_lots(
    conn: Connection, *, now: datetime, limit: int, wallets: Sequence[int]
) -> list[LotRow]:
    """The wallets' expired lots with data left; rows another sweep holds are skipped."""
    async with conn.cursor(row_factory=class_row(LotRow)) as cur:
        await cur.execute(
            f"""SELECT {_LOT_COLUMNS} FROM wallet_lots
                WHERE remaining > 0 AND expires_at <= %s AND account_id = ANY(%s)
                ORDER BY lot_id LIMIT %s FOR UPDATE SKIP LOCKED""",
            (now, list(wallets), limit),
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
    """The account's balance: cached for CACHED_KINDS, the sum of its entries otherwise."""
    cur = await conn.execute(
        """
        SELECT CASE WHEN a.kind = ANY(%s) THEN a.balance
                    ELSE (SELECT coalesce(sum(amount), 0) FROM ledger_entries e
                          WHERE e.account_id = a.account_id) END
        FROM ledger_accounts a WHERE a.account_id = %s
        """,
        (list(CACHED_KINDS), account_id),
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
            WHERE a.kind IN ('user_wallet', 'merchant_pool', 'campaign')
              AND a.balance <> coalesce(s.total, 0)""",
        "account below zero": """
            SELECT format('%s account %s holds %s', a.kind, a.account_id, s.total)
            FROM ledger_accounts a
            JOIN (SELECT account_id, sum(amount) AS total FROM ledger_entries
                  GROUP BY account_id) s USING (account_id)
            WHERE a.kind IN ('user_wallet', 'merchant_pool', 'campaign', 'in_flight', 'breakage',
                             'platform_revenue')
              AND s.total < 0""",
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
            SELECT format('%s sums to %s', asset, sum(amount))
            FROM ledger_entries GROUP BY asset HAVING sum(amount) <> 0""",
    }
    problems: list[str] = []
    for name, sql in checks.items():
        cur = await conn.execute(sql)
        problems.extend(f"{name}: {text}" for (text,) in await cur.fetchall())
    return problems


async def set_memo(conn: Connection, txn_id: int, memo: dict[str, object]) -> None:
    """What the transaction was for (order, campaign, carrier), shown in histories."""
    await conn.execute(
        "UPDATE ledger_transactions SET memo = %s WHERE txn_id = %s", (Jsonb(memo), txn_id)
    )
