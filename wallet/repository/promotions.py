"""SQL of what fills wallets (wallet.promotions): data prices, partner links, campaigns, action
events, check-ins."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from uuid import UUID

from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from flowbill.db import Connection


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


async def data_price(conn: Connection, currency: str) -> int | None:
    cur = await conn.execute(
        "SELECT minor_per_100mb FROM data_prices WHERE currency = %s", (currency,)
    )
    row = await cur.fetchone()
    return int(row[0]) if row else None


@dataclass(frozen=True, slots=True)
class DataPriceRow:
    currency: str
    minor_per_100mb: int
    updated_at: datetime


async def data_prices(conn: Connection, *, after: str | None, limit: int) -> list[DataPriceRow]:
    """Prices by currency, after that currency."""
    async with conn.cursor(row_factory=class_row(DataPriceRow)) as cur:
        await cur.execute(
            "SELECT currency, minor_per_100mb, updated_at FROM data_prices"
            " WHERE %s::text IS NULL OR currency > %s::text ORDER BY currency LIMIT %s",
            (after, after, limit),
        )
        return await cur.fetchall()


async def set_data_price(conn: Connection, currency: str, minor_per_100mb: int) -> DataPriceRow:
    async with conn.cursor(row_factory=class_row(DataPriceRow)) as cur:
        await cur.execute(
            """
            INSERT INTO data_prices (currency, minor_per_100mb) VALUES (%s, %s)
            ON CONFLICT (currency) DO UPDATE
            SET minor_per_100mb = excluded.minor_per_100mb, updated_at = now()
            RETURNING currency, minor_per_100mb, updated_at
            """,
            (currency, minor_per_100mb),
        )
        row = await cur.fetchone()
        assert row is not None
        return row


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


@dataclass(frozen=True, slots=True)
class CampaignView(CampaignRow):
    """A campaign with its figures: what its budget holds, how many users it rewarded, and
    whether it runs at the moment asked about."""

    budget_left_bytes: int
    users_rewarded: int
    running: bool


async def campaign_views(
    conn: Connection, merchant_id: UUID, *, now: datetime, campaign_id: UUID | None = None,
    after: tuple[datetime, UUID] | None = None, limit: int = 1,
) -> list[CampaignView]:  # fmt: skip
    """The merchant's campaigns (or the one named), oldest first, after that key."""
    created_at, after_id = after or (None, None)
    async with conn.cursor(row_factory=class_row(CampaignView)) as cur:
        await cur.execute(
            f"""
            SELECT c.*, coalesce(a.balance, 0) AS budget_left_bytes,
                   (SELECT count(*) FROM campaign_rewards r
                    WHERE r.campaign_id = c.campaign_id)::integer AS users_rewarded,
                   -- running as wallet.promotions._running decides it for one campaign
                   (c.ended_at IS NULL AND c.starts_at <= %(now)s
                    AND (c.ends_at IS NULL OR c.ends_at > %(now)s)) AS running
            FROM (SELECT {_CAMPAIGN_COLUMNS} FROM campaigns) c
            LEFT JOIN ledger_accounts a
              ON a.kind = 'campaign' AND a.owner = c.campaign_id::text AND a.asset = 'data'
            WHERE c.merchant_id = %(m)s
              AND (%(id)s::uuid IS NULL OR c.campaign_id = %(id)s::uuid)
              AND (%(ac)s::timestamptz IS NULL
                   OR (c.created_at, c.campaign_id) > (%(ac)s::timestamptz, %(ai)s::uuid))
            ORDER BY c.created_at, c.campaign_id LIMIT %(limit)s
            """,
            {"now": now, "m": merchant_id, "id": campaign_id, "ac": created_at, "ai": after_id,
             "limit": limit},
        )  # fmt: skip
        return await cur.fetchall()


async def campaigns_budget_left(conn: Connection, merchant_id: UUID) -> int:
    """What the merchant's campaigns' budgets still hold, together."""
    cur = await conn.execute(
        """
        SELECT coalesce(sum(a.balance), 0) FROM campaigns c
        JOIN ledger_accounts a
          ON a.kind = 'campaign' AND a.owner = c.campaign_id::text AND a.asset = 'data'
        WHERE c.merchant_id = %s
        """,
        (merchant_id,),
    )
    row = await cur.fetchone()
    return 0 if row is None else int(row[0])


async def end_campaign(conn: Connection, campaign_id: UUID, *, now: datetime) -> None:
    await conn.execute(
        "UPDATE campaigns SET ended_at = %s WHERE campaign_id = %s AND ended_at IS NULL",
        (now, campaign_id),
    )


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


@dataclass(frozen=True, slots=True)
class CheckInRulesRow:
    cycle_days: int
    daily_bytes: int
    # Day of the cycle (as text: a JSON key) → bytes on that day.
    streak_bytes: dict[str, int]
    validity_days: int
    updated_at: datetime


async def check_in_rules(conn: Connection) -> CheckInRulesRow:
    async with conn.cursor(row_factory=class_row(CheckInRulesRow)) as cur:
        await cur.execute(
            "SELECT cycle_days, daily_bytes, streak_bytes, validity_days, updated_at"
            " FROM check_in_rules"
        )
        row = await cur.fetchone()
        assert row is not None
        return row


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
