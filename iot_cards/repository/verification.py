"""SQL of real-name verification: the verifications (masked data and the ID number's keyed
hash only) and the per-ID count of cards."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from psycopg.rows import class_row

from flowbill.db import Connection


@dataclass(frozen=True, slots=True)
class VerificationRow:
    verification_id: UUID
    iccid: str
    holder_id: UUID
    merchant_id: UUID
    id_hash: bytes
    id_masked: str
    name_masked: str
    phone_masked: str
    state: str
    reason: str | None
    holds_slot: bool
    submitted_at: datetime
    settled_at: datetime | None


_VERIFICATION = (
    "verification_id, iccid, holder_id, merchant_id, id_hash, id_masked, name_masked,"
    " phone_masked, state, reason, holds_slot, submitted_at, settled_at"
)


async def take_id_slot(conn: Connection, id_hash: bytes) -> bool:
    """Count one more card for the ID; False when it already holds ten (row-locked)."""
    cur = await conn.execute(
        """
        INSERT INTO iot_id_holders (id_hash, cards) VALUES (%s, 1)
        ON CONFLICT (id_hash) DO UPDATE SET cards = iot_id_holders.cards + 1
        WHERE iot_id_holders.cards < 10
        RETURNING cards
        """,
        (id_hash,),
    )
    return await cur.fetchone() is not None


async def give_back_id_slot(conn: Connection, id_hash: bytes) -> None:
    await conn.execute(
        "UPDATE iot_id_holders SET cards = cards - 1 WHERE id_hash = %s AND cards > 0",
        (id_hash,),
    )


async def insert_verification(conn: Connection, **values: object) -> VerificationRow:
    columns = ", ".join(values)
    marks = ", ".join(["%s"] * len(values))
    async with conn.cursor(row_factory=class_row(VerificationRow)) as cur:
        await cur.execute(
            f"INSERT INTO iot_verifications ({columns}) VALUES ({marks}) RETURNING {_VERIFICATION}",
            list(values.values()),
        )
        row = await cur.fetchone()
    assert row is not None
    return row


async def get_verification(
    conn: Connection, verification_id: UUID, *, lock: bool = False
) -> VerificationRow | None:
    async with conn.cursor(row_factory=class_row(VerificationRow)) as cur:
        await cur.execute(
            f"SELECT {_VERIFICATION} FROM iot_verifications WHERE verification_id = %s"
            + (" FOR UPDATE" if lock else ""),
            (verification_id,),
        )
        return await cur.fetchone()


async def update_verification(conn: Connection, verification_id: UUID, **changes: object) -> None:
    columns = ", ".join(f"{name} = %s" for name in changes)
    await conn.execute(
        f"UPDATE iot_verifications SET {columns} WHERE verification_id = %s",
        [*changes.values(), verification_id],
    )
