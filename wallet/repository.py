"""SQL of the wallet ledger: accounts, transactions, entries, lots."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import date, datetime
from uuid import UUID

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


# --- Promotions: prices, campaigns, action events, check-ins -------------------------------


@dataclass(frozen=True, slots=True)
class CampaignRow:
    campaign_id: UUID
    merchant_id: UUID
    name: str
    action: str
    bytes_per_action: int
    bytes_per_click: int
    per_user_limit: int | None
    validity_days: int
    budget_bytes: int
    starts_at: datetime
    ends_at: datetime | None
    ended_at: datetime | None
    budget_txn_id: int
    created_at: datetime


_CAMPAIGN_COLUMNS = (
    "campaign_id, merchant_id, name, action, bytes_per_action, bytes_per_click, per_user_limit,"
    " validity_days, budget_bytes, starts_at, ends_at, ended_at, budget_txn_id, created_at"
)


async def is_role(conn: Connection, tenant_id: UUID, role: str) -> bool:
    """Whether the tenant exists, is enabled and has the role."""
    cur = await conn.execute(
        "SELECT 1 FROM tenants WHERE tenant_id = %s AND role = %s AND disabled_at IS NULL",
        (tenant_id, role),
    )
    return await cur.fetchone() is not None


async def data_price(conn: Connection, currency: str) -> int | None:
    cur = await conn.execute(
        "SELECT minor_per_100mb FROM data_prices WHERE currency = %s", (currency,)
    )
    row = await cur.fetchone()
    return int(row[0]) if row else None


async def data_prices(conn: Connection) -> list[tuple[str, int, datetime]]:
    cur = await conn.execute(
        "SELECT currency, minor_per_100mb, updated_at FROM data_prices ORDER BY currency"
    )
    return [(str(c), int(p), u) for c, p, u in await cur.fetchall()]


async def set_data_price(conn: Connection, currency: str, minor_per_100mb: int) -> None:
    await conn.execute(
        """
        INSERT INTO data_prices (currency, minor_per_100mb) VALUES (%s, %s)
        ON CONFLICT (currency) DO UPDATE
        SET minor_per_100mb = excluded.minor_per_100mb, updated_at = now()
        """,
        (currency, minor_per_100mb),
    )


async def link_partner(conn: Connection, *, partner_id: UUID, merchant_id: UUID) -> None:
    await conn.execute(
        "INSERT INTO partner_links (partner_id, merchant_id) VALUES (%s, %s)"
        " ON CONFLICT DO NOTHING",
        (partner_id, merchant_id),
    )


async def unlink_partner(conn: Connection, *, partner_id: UUID, merchant_id: UUID) -> bool:
    cur = await conn.execute(
        "DELETE FROM partner_links WHERE partner_id = %s AND merchant_id = %s",
        (partner_id, merchant_id),
    )
    return cur.rowcount > 0


async def partners_of(conn: Connection, merchant_id: UUID) -> list[tuple[UUID, str, datetime]]:
    cur = await conn.execute(
        """
        SELECT l.partner_id, t.name, l.created_at FROM partner_links l
        JOIN tenants t ON t.tenant_id = l.partner_id
        WHERE l.merchant_id = %s ORDER BY l.created_at
        """,
        (merchant_id,),
    )
    return [(p, str(n), c) for p, n, c in await cur.fetchall()]


async def is_partner_of(conn: Connection, *, partner_id: UUID, merchant_id: UUID) -> bool:
    cur = await conn.execute(
        "SELECT 1 FROM partner_links WHERE partner_id = %s AND merchant_id = %s",
        (partner_id, merchant_id),
    )
    return await cur.fetchone() is not None


async def insert_campaign(
    conn: Connection,
    *,
    merchant_id: UUID,
    name: str,
    action: str,
    bytes_per_action: int,
    bytes_per_click: int,
    per_user_limit: int | None,
    validity_days: int,
    budget_bytes: int,
    starts_at: datetime,
    ends_at: datetime | None,
    budget_txn_id: int,
) -> CampaignRow:
    async with conn.cursor(row_factory=class_row(CampaignRow)) as cur:
        await cur.execute(
            f"""
            INSERT INTO campaigns (merchant_id, name, action, bytes_per_action, bytes_per_click,
                                   per_user_limit, validity_days, budget_bytes, starts_at,
                                   ends_at, budget_txn_id)
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
            RETURNING {_CAMPAIGN_COLUMNS}
            """,
            (merchant_id, name, action, bytes_per_action, bytes_per_click, per_user_limit,
             validity_days, budget_bytes, starts_at, ends_at, budget_txn_id),
        )  # fmt: skip
        row = await cur.fetchone()
        assert row is not None
        return row


async def get_campaign(
    conn: Connection, campaign_id: UUID, *, lock: bool = False
) -> CampaignRow | None:
    async with conn.cursor(row_factory=class_row(CampaignRow)) as cur:
        await cur.execute(
            f"SELECT {_CAMPAIGN_COLUMNS} FROM campaigns WHERE campaign_id = %s"
            + (" FOR UPDATE" if lock else ""),
            (campaign_id,),
        )
        return await cur.fetchone()


async def campaign_by_budget_txn(conn: Connection, txn_id: int) -> CampaignRow | None:
    async with conn.cursor(row_factory=class_row(CampaignRow)) as cur:
        await cur.execute(
            f"SELECT {_CAMPAIGN_COLUMNS} FROM campaigns WHERE budget_txn_id = %s", (txn_id,)
        )
        return await cur.fetchone()


async def campaigns_of(conn: Connection, merchant_id: UUID) -> list[CampaignRow]:
    async with conn.cursor(row_factory=class_row(CampaignRow)) as cur:
        await cur.execute(
            f"SELECT {_CAMPAIGN_COLUMNS} FROM campaigns WHERE merchant_id = %s"
            " ORDER BY created_at, campaign_id",
            (merchant_id,),
        )
        return await cur.fetchall()


async def end_campaign(conn: Connection, campaign_id: UUID, *, now: datetime) -> None:
    await conn.execute(
        "UPDATE campaigns SET ended_at = %s WHERE campaign_id = %s AND ended_at IS NULL",
        (now, campaign_id),
    )


async def campaign_figures(
    conn: Connection, campaign_ids: Sequence[UUID]
) -> dict[UUID, tuple[int, int]]:
    """Per campaign: (budget left, users rewarded)."""
    cur = await conn.execute(
        """
        SELECT c.campaign_id, coalesce(a.balance, 0),
               (SELECT count(*) FROM campaign_rewards r WHERE r.campaign_id = c.campaign_id)
        FROM campaigns c
        LEFT JOIN ledger_accounts a
          ON a.kind = 'campaign' AND a.owner = c.campaign_id::text AND a.asset = 'data'
        WHERE c.campaign_id = ANY(%s)
        """,
        (list(campaign_ids),),
    )
    return {c: (int(left), int(users)) for c, left, users in await cur.fetchall()}


async def count_reward(
    conn: Connection, *, campaign_id: UUID, user_id: str, limit: int | None
) -> bool:
    """Count one more reward for the user; False (nothing counted) when at the limit."""
    cur = await conn.execute(
        """
        INSERT INTO campaign_rewards AS r (campaign_id, user_id, rewards) VALUES (%s, %s, 1)
        ON CONFLICT (campaign_id, user_id) DO UPDATE SET rewards = r.rewards + 1
        WHERE %s::integer IS NULL OR r.rewards < %s::integer
        RETURNING rewards
        """,
        (campaign_id, user_id, limit, limit),
    )
    return await cur.fetchone() is not None


async def claim_event(
    conn: Connection, *, partner_id: UUID, event_id: str, campaign_id: UUID, action: str
) -> tuple[bool, UUID, str, object]:
    """Record the event, or find the first delivery: (new, campaign, action, what it granted).

    A concurrent delivery of the same event waits here for the first one to commit.
    """
    cur = await conn.execute(
        """
        INSERT INTO action_events (partner_id, event_id, campaign_id, action, granted)
        VALUES (%s, %s, %s, %s, '[]') ON CONFLICT DO NOTHING RETURNING 1
        """,
        (partner_id, event_id, campaign_id, action),
    )
    if await cur.fetchone() is not None:
        return True, campaign_id, action, []
    cur = await conn.execute(
        "SELECT campaign_id, action, granted FROM action_events"
        " WHERE partner_id = %s AND event_id = %s",
        (partner_id, event_id),
    )
    row = await cur.fetchone()
    assert row is not None
    return False, row[0], str(row[1]), row[2]


async def set_event_grants(
    conn: Connection, *, partner_id: UUID, event_id: str, granted: list[dict[str, object]]
) -> None:
    await conn.execute(
        "UPDATE action_events SET granted = %s WHERE partner_id = %s AND event_id = %s",
        (Jsonb(granted), partner_id, event_id),
    )


async def check_in_rules(conn: Connection) -> tuple[int, int, dict[str, int], int, datetime]:
    cur = await conn.execute(
        "SELECT cycle_days, daily_bytes, streak_bytes, validity_days, updated_at"
        " FROM check_in_rules"
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), dict(row[2]), int(row[3]), row[4]


async def set_check_in_rules(
    conn: Connection, *, cycle_days: int, daily_bytes: int, streak_bytes: dict[str, int],
    validity_days: int,
) -> None:  # fmt: skip
    await conn.execute(
        """
        UPDATE check_in_rules SET cycle_days = %s, daily_bytes = %s, streak_bytes = %s,
               validity_days = %s, updated_at = now()
        """,
        (cycle_days, daily_bytes, Jsonb(streak_bytes), validity_days),
    )


@dataclass(frozen=True, slots=True)
class CheckInRow:
    user_id: str
    day: date
    streak: int
    app_id: UUID
    campaign_id: UUID
    data_bytes: int
    txn_id: int
    lot_id: int
    created_at: datetime


async def last_check_in(conn: Connection, user_id: str, *, before: date) -> CheckInRow | None:
    async with conn.cursor(row_factory=class_row(CheckInRow)) as cur:
        await cur.execute(
            "SELECT * FROM check_ins WHERE user_id = %s AND day < %s ORDER BY day DESC LIMIT 1",
            (user_id, before),
        )
        return await cur.fetchone()


async def check_in_on(conn: Connection, user_id: str, day: date) -> CheckInRow | None:
    async with conn.cursor(row_factory=class_row(CheckInRow)) as cur:
        await cur.execute("SELECT * FROM check_ins WHERE user_id = %s AND day = %s", (user_id, day))
        return await cur.fetchone()


async def insert_check_in(
    conn: Connection, *, user_id: str, day: date, streak: int, app_id: UUID, campaign_id: UUID,
    data_bytes: int, txn_id: int, lot_id: int,
) -> None:  # fmt: skip
    await conn.execute(
        """
        INSERT INTO check_ins (user_id, day, streak, app_id, campaign_id, data_bytes, txn_id,
                               lot_id)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING
        """,
        (user_id, day, streak, app_id, campaign_id, data_bytes, txn_id, lot_id),
    )


async def check_in_campaigns(conn: Connection, *, now: datetime, at_least: int) -> list[UUID]:
    """Running check-in campaigns with at least `at_least` bytes left, ending soonest first."""
    cur = await conn.execute(
        """
        SELECT c.campaign_id FROM campaigns c
        JOIN ledger_accounts a
          ON a.kind = 'campaign' AND a.owner = c.campaign_id::text AND a.asset = 'data'
        WHERE c.action = 'check_in' AND c.ended_at IS NULL AND c.starts_at <= %(now)s
          AND (c.ends_at IS NULL OR c.ends_at > %(now)s) AND a.balance >= %(need)s
        ORDER BY c.ends_at NULLS LAST, c.starts_at, c.campaign_id
        LIMIT 5
        """,
        {"now": now, "need": at_least},
    )
    return [row[0] for row in await cur.fetchall()]


# --- Reports: history, who used a merchant's data, breakage, what expires soon ------------


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


# --- Carriers: top-ups and transfers-in ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class CarrierRow:
    carrier_id: str
    name: str
    package_mb: list[int]
    min_package_mb: int
    transfer_in: bool
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class CarrierOrderRow:
    order_id: UUID
    direction: str
    user_id: str
    idempotency_key: str
    carrier_id: str
    msisdn_masked: str
    data_mb: int
    state: str
    reason: str | None
    carrier_ref: str | None
    reserve_txn_id: int | None
    settle_txn_id: int | None
    lot_id: int | None
    attempts: int
    created_at: datetime
    updated_at: datetime
    settled_at: datetime | None


async def upsert_carrier(
    conn: Connection, *, carrier_id: str, name: str, package_mb: list[int], min_package_mb: int,
    transfer_in: bool,
) -> CarrierRow:  # fmt: skip
    async with conn.cursor(row_factory=class_row(CarrierRow)) as cur:
        await cur.execute(
            """
            INSERT INTO carriers (carrier_id, name, package_mb, min_package_mb, transfer_in)
            VALUES (%s, %s, %s, %s, %s)
            ON CONFLICT (carrier_id) DO UPDATE SET name = excluded.name,
                package_mb = excluded.package_mb, min_package_mb = excluded.min_package_mb,
                transfer_in = excluded.transfer_in, updated_at = now()
            RETURNING *
            """,
            (carrier_id, name, package_mb, min_package_mb, transfer_in),
        )
        row = await cur.fetchone()
        assert row is not None
        return row


async def get_carrier(conn: Connection, carrier_id: str) -> CarrierRow | None:
    async with conn.cursor(row_factory=class_row(CarrierRow)) as cur:
        await cur.execute("SELECT * FROM carriers WHERE carrier_id = %s", (carrier_id,))
        return await cur.fetchone()


async def list_carriers(conn: Connection) -> list[CarrierRow]:
    async with conn.cursor(row_factory=class_row(CarrierRow)) as cur:
        await cur.execute("SELECT * FROM carriers ORDER BY carrier_id")
        return await cur.fetchall()


async def insert_carrier_order(
    conn: Connection, *, direction: str, user_id: str, key: str, carrier_id: str,
    msisdn_masked: str, data_mb: int, state: str,
) -> tuple[CarrierOrderRow, bool]:  # fmt: skip
    """The order for (user, key): (order, created now). A concurrent twin waits here."""
    async with conn.cursor(row_factory=class_row(CarrierOrderRow)) as cur:
        await cur.execute(
            """
            INSERT INTO carrier_orders (direction, user_id, idempotency_key, carrier_id,
                                        msisdn_masked, data_mb, state)
            VALUES (%s, %s, %s, %s, %s, %s, %s)
            ON CONFLICT (user_id, idempotency_key) DO NOTHING RETURNING *
            """,
            (direction, user_id, key, carrier_id, msisdn_masked, data_mb, state),
        )
        row = await cur.fetchone()
        if row is not None:
            return row, True
        await cur.execute(
            "SELECT * FROM carrier_orders WHERE user_id = %s AND idempotency_key = %s",
            (user_id, key),
        )
        found = await cur.fetchone()
        assert found is not None
        return found, False


async def get_carrier_order(
    conn: Connection, order_id: UUID, *, lock: bool = False
) -> CarrierOrderRow | None:
    async with conn.cursor(row_factory=class_row(CarrierOrderRow)) as cur:
        await cur.execute(
            "SELECT * FROM carrier_orders WHERE order_id = %s" + (" FOR UPDATE" if lock else ""),
            (order_id,),
        )
        return await cur.fetchone()


async def carrier_orders_of(conn: Connection, user_id: str, *, limit: int) -> list[CarrierOrderRow]:
    async with conn.cursor(row_factory=class_row(CarrierOrderRow)) as cur:
        await cur.execute(
            "SELECT * FROM carrier_orders WHERE user_id = %s ORDER BY created_at DESC LIMIT %s",
            (user_id, limit),
        )
        return await cur.fetchall()


async def update_carrier_order(
    conn: Connection, order_id: UUID, *, state: str, reason: str | None = None,
    carrier_ref: str | None = None, reserve_txn_id: int | None = None,
    settle_txn_id: int | None = None, lot_id: int | None = None, attempt: bool = False,
    settled: bool = False,
) -> None:  # fmt: skip
    await conn.execute(
        """
        UPDATE carrier_orders SET state = %s, reason = coalesce(%s, reason),
            carrier_ref = coalesce(%s, carrier_ref),
            reserve_txn_id = coalesce(%s, reserve_txn_id),
            settle_txn_id = coalesce(%s, settle_txn_id), lot_id = coalesce(%s, lot_id),
            attempts = attempts + %s, updated_at = now(),
            settled_at = CASE WHEN %s THEN now() ELSE settled_at END
        WHERE order_id = %s
        """,
        (state, reason, carrier_ref, reserve_txn_id, settle_txn_id, lot_id, int(attempt),
         settled, order_id),
    )  # fmt: skip


async def open_carrier_orders(
    conn: Connection, *, older_than: datetime, limit: int
) -> list[CarrierOrderRow]:
    async with conn.cursor(row_factory=class_row(CarrierOrderRow)) as cur:
        await cur.execute(
            """
            SELECT * FROM carrier_orders
            WHERE state IN ('reserved', 'submitted') AND updated_at < %s
            ORDER BY updated_at LIMIT %s
            """,
            (older_than, limit),
        )
        return await cur.fetchall()


# --- The exchange: catalogue, orders, returns ----------------------------------------------


@dataclass(frozen=True, slots=True)
class ItemRow:
    item_id: UUID
    kind: str
    name: str
    sku: str
    price_bytes: int
    carrier_prices: dict[str, int]
    price_minor: int
    currency: str
    merchant_id: UUID | None
    stock: int | None
    per_user_limit: int | None
    active: bool
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class ExchangeOrderRow:
    order_id: UUID
    user_id: str
    idempotency_key: str
    item_id: UUID
    quantity: int
    carrier_id: str | None
    unit_bytes: int
    unit_minor: int
    currency: str
    state: str
    payment_state: str
    fulfilment_state: str
    reason: str | None
    voucher: str | None
    spend_txn_id: int | None
    payment_txn_id: int | None
    returned_quantity: int
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class ReturnRow:
    return_id: UUID
    order_id: UUID
    idempotency_key: str
    quantity: int
    data_txn_id: int
    money_minor: int
    money_state: str
    money_txn_id: int | None
    created_at: datetime


async def insert_item(conn: Connection, **values: object) -> ItemRow:
    columns = list(values)
    params = [Jsonb(v) if k == "carrier_prices" else v for k, v in values.items()]
    async with conn.cursor(row_factory=class_row(ItemRow)) as cur:
        await cur.execute(
            f"INSERT INTO catalogue_items ({', '.join(columns)})"
            f" VALUES ({', '.join(['%s'] * len(columns))}) RETURNING *",
            params,
        )
        row = await cur.fetchone()
        assert row is not None
        return row


async def update_item(
    conn: Connection, item_id: UUID, *, stock: int | None, set_stock: bool, active: bool | None
) -> ItemRow | None:
    async with conn.cursor(row_factory=class_row(ItemRow)) as cur:
        await cur.execute(
            """
            UPDATE catalogue_items SET
                stock = CASE WHEN %s THEN %s ELSE stock END,
                active = coalesce(%s, active), updated_at = now()
            WHERE item_id = %s RETURNING *
            """,
            (set_stock, stock, active, item_id),
        )
        return await cur.fetchone()


async def get_item(conn: Connection, item_id: UUID) -> ItemRow | None:
    async with conn.cursor(row_factory=class_row(ItemRow)) as cur:
        await cur.execute("SELECT * FROM catalogue_items WHERE item_id = %s", (item_id,))
        return await cur.fetchone()


async def list_items(conn: Connection, *, active_only: bool) -> list[ItemRow]:
    async with conn.cursor(row_factory=class_row(ItemRow)) as cur:
        await cur.execute(
            "SELECT * FROM catalogue_items WHERE active OR NOT %s ORDER BY kind, name, item_id",
            (active_only,),
        )
        return await cur.fetchall()


async def restock(conn: Connection, item_id: UUID, quantity: int) -> None:
    await conn.execute(
        "UPDATE catalogue_items SET stock = stock + %s WHERE item_id = %s AND stock IS NOT NULL",
        (quantity, item_id),
    )


@dataclass(frozen=True, slots=True)
class Placement:
    """What `wallet_place_order` (migrations/0012) did: its outcome, what a refusal needs to
    explain itself, and the order with its events (placed, or the first of a repeat)."""

    outcome: str
    held_units: int | None
    item_name: str | None
    item_kind: str | None
    item_limit: int | None
    item_carriers: list[str] | None
    order: ExchangeOrderRow | None
    events: list[tuple[str, str | None, datetime]]


_ORDER_FIELDS = [f.name for f in fields(ExchangeOrderRow)]
_PLACE_ORDER = (
    "SELECT r.outcome, r.held_units, r.item_name, r.item_kind, r.item_limit, r.item_carriers,"
    " r.event_states, r.event_details, r.event_ats, "
    + ", ".join(f"(r.placed).{name}" for name in _ORDER_FIELDS)
    + " FROM wallet_place_order(%s, %s, %s, %s, %s, %s) r"
)


async def place_exchange_order(
    conn: Connection, *, user_id: str, key: str, item_id: UUID, quantity: int,
    carrier_id: str | None, now: datetime,
) -> Placement:  # fmt: skip
    """Place an order in one round trip: item, order, limit, stock, spend and events."""
    cur = await conn.execute(_PLACE_ORDER, (user_id, key, item_id, quantity, carrier_id, now))
    row = await cur.fetchone()
    assert row is not None
    outcome, held, name, kind, limit, carriers, states, details, ats = row[:9]
    order = None if row[9] is None else ExchangeOrderRow(*row[9:])
    return Placement(
        outcome=outcome, held_units=held, item_name=name, item_kind=kind, item_limit=limit,
        item_carriers=carriers, order=order,
        events=list(zip(states or [], details or [], ats or [], strict=True)),
    )  # fmt: skip


async def get_exchange_order(
    conn: Connection, order_id: UUID, *, lock: bool = False
) -> ExchangeOrderRow | None:
    async with conn.cursor(row_factory=class_row(ExchangeOrderRow)) as cur:
        await cur.execute(
            "SELECT * FROM exchange_orders WHERE order_id = %s" + (" FOR UPDATE" if lock else ""),
            (order_id,),
        )
        return await cur.fetchone()


async def exchange_orders_of(
    conn: Connection, *, user_id: str | None = None, merchant_id: UUID | None = None, limit: int
) -> list[ExchangeOrderRow]:
    async with conn.cursor(row_factory=class_row(ExchangeOrderRow)) as cur:
        await cur.execute(
            """
            SELECT o.* FROM exchange_orders o JOIN catalogue_items i USING (item_id)
            WHERE (%(u)s::text IS NULL OR o.user_id = %(u)s)
              AND (%(m)s::uuid IS NULL OR i.merchant_id = %(m)s)
            ORDER BY o.created_at DESC LIMIT %(limit)s
            """,
            {"u": user_id, "m": merchant_id, "limit": limit},
        )
        return await cur.fetchall()


async def update_exchange_order(conn: Connection, order_id: UUID, **changes: object) -> None:
    allowed = {"state", "payment_state", "fulfilment_state", "reason", "voucher", "spend_txn_id",
               "payment_txn_id", "returned_quantity"}  # fmt: skip
    assert set(changes) <= allowed, set(changes) - allowed
    sets = ", ".join(f"{column} = %s" for column in changes)
    await conn.execute(
        f"UPDATE exchange_orders SET {sets}, updated_at = now() WHERE order_id = %s",
        [*changes.values(), order_id],
    )


async def add_order_event(conn: Connection, order_id: UUID, state: str, detail: str | None) -> None:
    await conn.execute(
        "INSERT INTO exchange_order_events (order_id, state, detail) VALUES (%s, %s, %s)",
        (order_id, state, detail),
    )


async def order_events(conn: Connection, order_id: UUID) -> list[tuple[str, str | None, datetime]]:
    cur = await conn.execute(
        "SELECT state, detail, at FROM exchange_order_events WHERE order_id = %s ORDER BY event_id",
        (order_id,),
    )
    return [(str(s), d, at) for s, d, at in await cur.fetchall()]


async def insert_return(
    conn: Connection, *, order_id: UUID, key: str, quantity: int, data_txn_id: int,
    money_minor: int,
) -> ReturnRow:  # fmt: skip
    async with conn.cursor(row_factory=class_row(ReturnRow)) as cur:
        await cur.execute(
            """
            INSERT INTO exchange_returns (order_id, idempotency_key, quantity, data_txn_id,
                                          money_minor, money_state)
            VALUES (%s, %s, %s, %s, %s, %s) RETURNING *
            """,
            (order_id, key, quantity, data_txn_id, money_minor,
             "pending" if money_minor else "none"),
        )  # fmt: skip
        row = await cur.fetchone()
        assert row is not None
        return row


async def find_return(conn: Connection, key: str) -> ReturnRow | None:
    async with conn.cursor(row_factory=class_row(ReturnRow)) as cur:
        await cur.execute("SELECT * FROM exchange_returns WHERE idempotency_key = %s", (key,))
        return await cur.fetchone()


async def get_return(conn: Connection, return_id: UUID, *, lock: bool = False) -> ReturnRow | None:
    async with conn.cursor(row_factory=class_row(ReturnRow)) as cur:
        await cur.execute(
            "SELECT * FROM exchange_returns WHERE return_id = %s" + (" FOR UPDATE" if lock else ""),
            (return_id,),
        )
        return await cur.fetchone()


async def returns_of(conn: Connection, order_id: UUID) -> list[ReturnRow]:
    async with conn.cursor(row_factory=class_row(ReturnRow)) as cur:
        await cur.execute(
            "SELECT * FROM exchange_returns WHERE order_id = %s ORDER BY created_at", (order_id,)
        )
        return await cur.fetchall()


async def settle_return_money(conn: Connection, return_id: UUID, txn_id: int) -> None:
    await conn.execute(
        "UPDATE exchange_returns SET money_state = 'refunded', money_txn_id = %s"
        " WHERE return_id = %s",
        (txn_id, return_id),
    )


async def open_exchange_work(
    conn: Connection, *, older_than: datetime, limit: int
) -> tuple[list[UUID], list[UUID]]:
    """Orders waiting on a party, and returns whose money is not yet refunded."""
    cur = await conn.execute(
        """
        SELECT order_id FROM exchange_orders
        WHERE state IN ('placed', 'paid') AND updated_at < %s
          AND (payment_state = 'pending' OR fulfilment_state IN ('waiting', 'pending'))
        ORDER BY updated_at LIMIT %s
        """,
        (older_than, limit),
    )
    orders = [row[0] for row in await cur.fetchall()]
    cur = await conn.execute(
        "SELECT return_id FROM exchange_returns WHERE money_state = 'pending' AND created_at < %s"
        " ORDER BY created_at LIMIT %s",
        (older_than, limit),
    )
    return orders, [row[0] for row in await cur.fetchall()]


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
