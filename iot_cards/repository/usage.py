"""SQL of data on cards and its use: the grants orders put on cards (the quota), the cards
whose usage is watched, merchants' thresholds and the alerts they raised."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from uuid import UUID

from psycopg.rows import class_row

from flowbill.db import Connection


@dataclass(frozen=True, slots=True)
class ThresholdRow:
    threshold_id: UUID
    merchant_id: UUID
    percent: int | None
    bytes: int | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class AlertRow:
    alert_id: int
    merchant_id: UUID
    subject: str
    iccids: list[str]
    threshold_id: UUID
    percent: int | None
    bytes: int | None
    period: date
    used_bytes: int
    quota_bytes: int
    crossed_at: datetime


@dataclass(frozen=True, slots=True)
class LiveCard:
    """A card whose usage is watched, with what it takes to judge its quota."""

    iccid: str
    merchant_id: UUID
    plan_id: UUID | None
    pooled: bool
    state: str
    block_reasons: list[str]


async def insert_grant(
    conn: Connection,
    *,
    order_id: UUID,
    iccid: str,
    data_bytes: int,
    starts_at: datetime,
    ends_at: datetime,
) -> None:
    await conn.execute(
        """
        INSERT INTO iot_card_grants (order_id, iccid, data_bytes, starts_at, ends_at)
        VALUES (%s, %s, %s, %s, %s) ON CONFLICT (order_id) DO NOTHING
        """,
        (order_id, iccid, data_bytes, starts_at, ends_at),
    )


async def cancel_grant(conn: Connection, order_id: UUID) -> None:
    await conn.execute(
        "UPDATE iot_card_grants SET cancelled = true WHERE order_id = %s", (order_id,)
    )


async def latest_term_end(conn: Connection, iccid: str, *, monthly: bool) -> datetime | None:
    """The end of the card's last monthly term (top-ups are one month long, by design)."""
    cur = await conn.execute(
        """
        SELECT max(g.ends_at) FROM iot_card_grants g JOIN iot_orders o USING (order_id)
        WHERE g.iccid = %s AND NOT g.cancelled AND (o.plan_kind = 'monthly') = %s
        """,
        (iccid, monthly),
    )
    row = await cur.fetchone()
    return None if row is None else row[0]


async def quotas(conn: Connection, iccids: list[str], *, period_start: datetime) -> dict[str, int]:
    """Data each card may use in the period that starts at `period_start`."""
    cur = await conn.execute(
        """
        SELECT iccid, sum(data_bytes)::bigint FROM iot_card_grants
        WHERE iccid = ANY(%s) AND NOT cancelled AND starts_at <= %s AND ends_at > %s
        GROUP BY iccid
        """,
        (iccids, period_start, period_start),
    )
    return {str(i): int(q) for i, q in await cur.fetchall()}


_LIVE = """
    SELECT c.iccid, c.merchant_id, c.plan_id, coalesce(m.pooled, false) AS pooled, c.state,
           c.block_reasons
    FROM iot_cards c
    LEFT JOIN iot_merchant_plans m ON m.merchant_id = c.merchant_id AND m.plan_id = c.plan_id
    WHERE c.state IN ('active', 'blocked', 'suspended')
"""


async def live_cards(conn: Connection, iccids: list[str] | None) -> list[LiveCard]:
    """Activated cards (active, blocked or suspended) with their plan's pooling: all of them,
    or those of `iccids` and the cards that share a pool with them."""
    async with conn.cursor(row_factory=class_row(LiveCard)) as cur:
        if iccids is None:
            await cur.execute(_LIVE + " ORDER BY c.iccid")
            return await cur.fetchall()
        await cur.execute(_LIVE + " AND c.iccid = ANY(%s) ORDER BY c.iccid", (iccids,))
        found = await cur.fetchall()
        pools = {(c.merchant_id, c.plan_id) for c in found if c.pooled}
        if not pools:
            return found
        await cur.execute(
            _LIVE + " AND (c.merchant_id, c.plan_id) IN"
            " (SELECT * FROM unnest(%s::uuid[], %s::uuid[])) ORDER BY c.iccid",
            ([p[0] for p in pools], [p[1] for p in pools]),
        )
        mates = await cur.fetchall()
    return sorted({c.iccid: c for c in [*found, *mates]}.values(), key=lambda c: c.iccid)


async def insert_threshold(
    conn: Connection, *, merchant_id: UUID, percent: int | None, data_bytes: int | None
) -> ThresholdRow | None:
    async with conn.cursor(row_factory=class_row(ThresholdRow)) as cur:
        await cur.execute(
            """
            INSERT INTO iot_usage_thresholds (merchant_id, percent, bytes) VALUES (%s, %s, %s)
            ON CONFLICT DO NOTHING
            RETURNING threshold_id, merchant_id, percent, bytes, created_at
            """,
            (merchant_id, percent, data_bytes),
        )
        return await cur.fetchone()


async def thresholds_of(
    conn: Connection,
    merchant_ids: list[UUID],
    *,
    after: tuple[datetime, UUID] | None = None,
    limit: int | None = None,
) -> list[ThresholdRow]:
    """The merchants' thresholds, oldest first: all of them, or one page (`limit + 1` rows
    after `after`)."""
    created, threshold_id = after or (None, None)
    async with conn.cursor(row_factory=class_row(ThresholdRow)) as cur:
        await cur.execute(
            """
            SELECT threshold_id, merchant_id, percent, bytes, created_at
            FROM iot_usage_thresholds WHERE merchant_id = ANY(%(merchants)s)
              AND (%(created)s::timestamptz IS NULL
                   OR (created_at, threshold_id) > (%(created)s, %(threshold)s::uuid))
            ORDER BY created_at, threshold_id LIMIT %(limit)s
            """,
            {
                "merchants": merchant_ids,
                "created": created,
                "threshold": threshold_id,
                "limit": None if limit is None else limit + 1,
            },
        )
        return await cur.fetchall()


async def delete_threshold(conn: Connection, *, merchant_id: UUID, threshold_id: UUID) -> bool:
    cur = await conn.execute(
        "DELETE FROM iot_usage_thresholds WHERE merchant_id = %s AND threshold_id = %s",
        (merchant_id, threshold_id),
    )
    return cur.rowcount > 0


async def record_alert(
    conn: Connection,
    *,
    merchant_id: UUID,
    subject: str,
    iccids: list[str],
    threshold_id: UUID,
    period: date,
    used_bytes: int,
    quota_bytes: int,
    now: datetime,
) -> bool:
    cur = await conn.execute(
        """
        INSERT INTO iot_usage_alerts (merchant_id, subject, iccids, threshold_id, period,
                                      used_bytes, quota_bytes, crossed_at)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
        ON CONFLICT (subject, threshold_id, period) DO NOTHING
        """,
        (merchant_id, subject, iccids, threshold_id, period, used_bytes, quota_bytes, now),
    )
    return cur.rowcount > 0


_ALERT = """
    SELECT a.alert_id, a.merchant_id, a.subject, a.iccids, a.threshold_id, t.percent, t.bytes,
           a.period, a.used_bytes, a.quota_bytes, a.crossed_at
    FROM iot_usage_alerts a JOIN iot_usage_thresholds t USING (threshold_id)
"""


async def pending_alerts(
    conn: Connection, *, merchant_id: UUID | None, limit: int
) -> list[AlertRow]:
    async with conn.cursor(row_factory=class_row(AlertRow)) as cur:
        await cur.execute(
            _ALERT + " WHERE a.delivered_at IS NULL AND (%s::uuid IS NULL OR a.merchant_id = %s)"
            " ORDER BY a.alert_id LIMIT %s FOR UPDATE OF a SKIP LOCKED",
            (merchant_id, merchant_id, limit),
        )
        return await cur.fetchall()


async def alerts_of(
    conn: Connection, merchant_id: UUID, *, before: int | None = None, limit: int
) -> list[AlertRow]:
    """One page of a merchant's alerts, newest first (`limit + 1` rows before `before`)."""
    async with conn.cursor(row_factory=class_row(AlertRow)) as cur:
        await cur.execute(
            _ALERT + " WHERE a.merchant_id = %s AND (%s::bigint IS NULL OR a.alert_id < %s)"
            " ORDER BY a.alert_id DESC LIMIT %s",
            (merchant_id, before, before, limit + 1),
        )
        return await cur.fetchall()


async def mark_delivered(conn: Connection, alert_ids: list[int], *, now: datetime) -> int:
    cur = await conn.execute(
        "UPDATE iot_usage_alerts SET delivered_at = %s"
        " WHERE alert_id = ANY(%s) AND delivered_at IS NULL",
        (now, alert_ids),
    )
    return cur.rowcount
