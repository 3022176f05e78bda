"""SQL of the commands given for later or for earlier: scheduled changes and the time of a
card's last applied change."""

from __future__ import annotations

from datetime import datetime

from psycopg.rows import class_row

from flowbill.db import Connection
from iot_cards.repository.cards import HISTORY_COLUMNS, HistoryRow


async def last_effective(conn: Connection, iccid: str) -> datetime | None:
    cur = await conn.execute(
        "SELECT max(effective_at) FROM iot_card_history WHERE iccid = %s AND status = 'applied'",
        (iccid,),
    )
    row = await cur.fetchone()
    return None if row is None else row[0]


async def due_scheduled(conn: Connection, *, now: datetime, limit: int) -> list[HistoryRow]:
    async with conn.cursor(row_factory=class_row(HistoryRow)) as cur:
        await cur.execute(
            f"""
            SELECT {HISTORY_COLUMNS} FROM iot_card_history
            WHERE status = 'scheduled' AND effective_at <= %s
            ORDER BY effective_at, history_id LIMIT %s FOR UPDATE SKIP LOCKED
            """,
            (now, limit),
        )
        return await cur.fetchall()


async def settle_scheduled(
    conn: Connection,
    history_id: int,
    *,
    status: str,
    from_state: str | None,
    to_state: str | None,
    applied_at: datetime | None,
    reason: str | None = None,
) -> None:
    await conn.execute(
        """
        UPDATE iot_card_history SET status = %s, from_state = %s, to_state = %s,
            applied_at = %s, reason = coalesce(%s, reason)
        WHERE history_id = %s
        """,
        (status, from_state, to_state, applied_at, reason, history_id),
    )


async def cancel_scheduled(
    conn: Connection, iccid: str, *, from_state: str, at: datetime, reason: str
) -> list[int]:
    """Settle every command still scheduled for the card as skipped, with the reason; returns
    their history ids."""
    cur = await conn.execute(
        """
        UPDATE iot_card_history SET status = 'skipped', from_state = %s, applied_at = %s,
            reason = %s
        WHERE history_id IN (
            -- A sweep applying one of them now holds it: the sweep judges it after this
            -- commits, and finds the card changed hands (`changed_hands_after`).
            SELECT history_id FROM iot_card_history
            WHERE iccid = %s AND status = 'scheduled' FOR UPDATE SKIP LOCKED
        )
        RETURNING history_id
        """,
        (from_state, at, reason, iccid),
    )
    return [int(row[0]) for row in await cur.fetchall()]


async def changed_hands_after(conn: Connection, iccid: str, history_id: int) -> bool:
    """Whether the card was sold or released after this history entry was recorded."""
    cur = await conn.execute(
        """
        SELECT EXISTS (
            SELECT FROM iot_card_history
            WHERE iccid = %s AND history_id > %s AND status = 'applied'
              AND command IN ('sell', 'release')
        )
        """,
        (iccid, history_id),
    )
    row = await cur.fetchone()
    return bool(row and row[0])
