"""SQL of cards and their history: the card rows, the lifecycle's changes, the states the
coverage publisher reads."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from psycopg.rows import class_row

from flowbill.db import Connection


@dataclass(frozen=True, slots=True)
class CardRow:
    iccid: str
    imsi: str
    msisdn: str
    batch_id: UUID
    merchant_id: UUID | None
    state: str
    block_reasons: list[str]
    suspended_by: str | None
    holder_id: UUID | None
    plan_id: UUID | None
    imei: str | None
    last_imei: str | None
    verification_id: UUID | None
    activated_at: datetime | None
    state_changed_at: datetime
    created_at: datetime


_CARD = (
    "iccid, imsi, msisdn, batch_id, merchant_id, state, block_reasons, suspended_by, holder_id,"
    " plan_id, imei, last_imei, verification_id, activated_at, state_changed_at, created_at"
)


@dataclass(frozen=True, slots=True)
class HistoryRow:
    history_id: int
    iccid: str
    command: str
    from_state: str | None
    to_state: str | None
    actor: str
    reason: str
    command_key: str | None
    effective_at: datetime
    applied_at: datetime | None
    status: str


HISTORY_COLUMNS = (
    "history_id, iccid, command, from_state, to_state, actor, reason, command_key, effective_at,"
    " applied_at, status"
)


async def get_card(
    conn: Connection,
    iccid: str,
    *,
    lock: bool = False,
    merchant_id: UUID | None = None,
    holder_id: UUID | None = None,
) -> CardRow | None:
    conditions = ["iccid = %s"]
    params: list[object] = [iccid]
    if merchant_id is not None:
        conditions.append("merchant_id = %s")
        params.append(merchant_id)
    if holder_id is not None:
        conditions.append("holder_id = %s")
        params.append(holder_id)
    sql = f"SELECT {_CARD} FROM iot_cards WHERE {' AND '.join(conditions)}"
    async with conn.cursor(row_factory=class_row(CardRow)) as cur:
        await cur.execute(sql + (" FOR UPDATE" if lock else ""), params)
        return await cur.fetchone()


async def list_cards(
    conn: Connection,
    *,
    merchant_id: UUID | None = None,
    holder_id: UUID | None = None,
    state: str | None = None,
    after: str | None = None,
    limit: int,
) -> list[CardRow]:
    """One page of cards in ICCID order after `after` (`limit + 1` rows: the page and a
    look past it)."""
    async with conn.cursor(row_factory=class_row(CardRow)) as cur:
        await cur.execute(
            f"""
            SELECT {_CARD} FROM iot_cards
            WHERE (%(merchant)s::uuid IS NULL OR merchant_id = %(merchant)s)
              AND (%(holder)s::uuid IS NULL OR holder_id = %(holder)s)
              AND (%(state)s::text IS NULL OR state = %(state)s)
              AND (%(after)s::text IS NULL OR iccid > %(after)s)
            ORDER BY iccid LIMIT %(limit)s
            """,
            {
                "merchant": merchant_id,
                "holder": holder_id,
                "state": state,
                "after": after,
                "limit": limit + 1,
            },
        )
        return await cur.fetchall()


async def update_card(conn: Connection, iccid: str, **changes: object) -> None:
    columns = ", ".join(f"{name} = %s" for name in changes)
    await conn.execute(
        f"UPDATE iot_cards SET {columns} WHERE iccid = %s", [*changes.values(), iccid]
    )


async def insert_history(
    conn: Connection,
    *,
    iccid: str,
    command: str,
    from_state: str | None,
    to_state: str | None,
    actor: str,
    reason: str,
    command_key: str | None,
    effective_at: datetime,
    applied_at: datetime | None,
    status: str,
) -> int:
    cur = await conn.execute(
        """
        INSERT INTO iot_card_history (iccid, command, from_state, to_state, actor, reason,
                                      command_key, effective_at, applied_at, status)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING history_id
        """,
        (
            iccid,
            command,
            from_state,
            to_state,
            actor,
            reason,
            command_key,
            effective_at,
            applied_at,
            status,
        ),
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def history_by_key(conn: Connection, command_key: str) -> HistoryRow | None:
    async with conn.cursor(row_factory=class_row(HistoryRow)) as cur:
        await cur.execute(
            f"SELECT {HISTORY_COLUMNS} FROM iot_card_history WHERE command_key = %s", (command_key,)
        )
        return await cur.fetchone()


async def history_of(
    conn: Connection, iccid: str, *, this_holding: bool = False
) -> list[HistoryRow]:
    """The card's history; with `this_holding`, only from its last sale on (what its
    present holder did and saw, nothing of those before)."""
    async with conn.cursor(row_factory=class_row(HistoryRow)) as cur:
        await cur.execute(
            f"""
            SELECT {HISTORY_COLUMNS} FROM iot_card_history
            WHERE iccid = %(iccid)s
              AND (NOT %(this_holding)s OR history_id >= coalesce((
                  SELECT max(history_id) FROM iot_card_history
                  WHERE iccid = %(iccid)s AND command = 'sell' AND status = 'applied'
              ), 0))
            ORDER BY history_id
            """,
            {"iccid": iccid, "this_holding": this_holding},
        )
        return await cur.fetchall()


async def states_of(conn: Connection, iccids: list[str]) -> list[tuple[str, str, list[str]]]:
    cur = await conn.execute(
        "SELECT iccid, state, block_reasons FROM iot_cards WHERE iccid = ANY(%s)", (iccids,)
    )
    return [(str(i), str(s), list(r)) for i, s, r in await cur.fetchall()]


async def cards_changed_since(conn: Connection, *, since: datetime) -> list[str]:
    cur = await conn.execute(
        """
        SELECT DISTINCT iccid FROM iot_card_history
        WHERE status = 'applied' AND applied_at > %s ORDER BY iccid
        """,
        (since,),
    )
    return [str(row[0]) for row in await cur.fetchall()]
