"""SQL of who owns a SIM and which driver agreed to pay for a vehicle."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from psycopg.rows import class_row

from flowbill.db import Connection

# --- SIM owners ----------------------------------------------------------------------------


async def provisioned(
    conn: Connection, iccids: Sequence[str], *, for_update: bool = False
) -> list[str]:
    """The provisioned ones of these SIMs; `for_update` locks them in ICCID order, so that two
    owner changes of a SIM take turns (and never deadlock)."""
    cur = await conn.execute(
        "SELECT iccid FROM sims WHERE iccid = ANY(%s) ORDER BY iccid"
        + (" FOR UPDATE" if for_update else ""),
        (list(iccids),),
    )
    return [r[0] for r in await cur.fetchall()]


async def set_owner(
    conn: Connection,
    iccids: Sequence[str],
    *,
    owner_id: UUID | None,
    effective_from: datetime,
    applied: bool,
) -> None:
    """Record an owner from a moment on; `applied` when its unfitting is done in the same
    transaction (a change dated later is applied by `apply_due`)."""
    await conn.execute(
        """INSERT INTO sim_owners (iccid, effective_from, owner_id, applied_at)
           SELECT unnest(%s::text[]), %s, %s, CASE WHEN %s THEN now() END
           ON CONFLICT (iccid, effective_from) DO UPDATE
           SET owner_id = excluded.owner_id, set_at = now(), applied_at = excluded.applied_at""",
        (sorted(iccids), effective_from, owner_id, applied),
    )


async def due_changes(conn: Connection, now: datetime, *, limit: int) -> list[tuple[str, datetime]]:
    """Owner changes that took effect and are not applied yet, locked (a concurrent run skips
    them), oldest first."""
    cur = await conn.execute(
        """SELECT iccid, effective_from FROM sim_owners
           WHERE applied_at IS NULL AND effective_from <= %s
           ORDER BY effective_from, iccid LIMIT %s FOR UPDATE SKIP LOCKED""",
        (now, limit),
    )
    return [(r[0], r[1]) for r in await cur.fetchall()]


async def applied_since(conn: Connection, since: datetime) -> list[str]:
    cur = await conn.execute(
        "SELECT DISTINCT iccid FROM sim_owners WHERE applied_at >= %s ORDER BY iccid", (since,)
    )
    return [r[0] for r in await cur.fetchall()]


async def mark_applied(conn: Connection, changes: Sequence[tuple[str, datetime]]) -> None:
    await conn.execute(
        """UPDATE sim_owners o SET applied_at = now()
           FROM unnest(%s::text[], %s::timestamptz[]) AS d (iccid, effective_from)
           WHERE o.iccid = d.iccid AND o.effective_from = d.effective_from""",
        ([c[0] for c in changes], [c[1] for c in changes]),
    )


async def owners_at(
    conn: Connection, iccids: Sequence[str], at: datetime
) -> dict[str, UUID | None]:
    """The owner of each SIM at a moment (absent: never owned)."""
    cur = await conn.execute(
        """SELECT DISTINCT ON (iccid) iccid, owner_id FROM sim_owners
           WHERE iccid = ANY(%s) AND effective_from <= %s
           ORDER BY iccid, effective_from DESC""",
        (list(iccids), at),
    )
    return {r[0]: r[1] for r in await cur.fetchall()}


@dataclass(frozen=True, slots=True)
class OwnerRow:
    iccid: str
    effective_from: datetime
    owner_id: UUID | None
    set_at: datetime


async def owner_history(
    conn: Connection, iccid: str, *, after: datetime | None, limit: int
) -> list[OwnerRow]:
    async with conn.cursor(row_factory=class_row(OwnerRow)) as cur:
        await cur.execute(
            """SELECT iccid, effective_from, owner_id, set_at FROM sim_owners
               WHERE iccid = %s AND (%s::timestamptz IS NULL OR effective_from > %s)
               ORDER BY effective_from LIMIT %s""",
            (iccid, after, after, limit),
        )
        return await cur.fetchall()


async def unfit_from_others(conn: Connection, iccids: Sequence[str], now: datetime) -> list[str]:
    """Take these SIMs out of every vehicle whose automaker does not own them at `now`
    (marking those vehicles changed, for the coverage); returns the SIMs taken out."""
    cur = await conn.execute(
        """WITH owner AS (
               SELECT DISTINCT ON (iccid) iccid, owner_id FROM sim_owners
               WHERE iccid = ANY(%(iccids)s) AND effective_from <= %(now)s
               ORDER BY iccid, effective_from DESC
           ), gone AS (
               DELETE FROM vehicle_sims s USING vehicles v, owner o
               WHERE s.vin = v.vin AND s.iccid = o.iccid
                 AND v.automaker_id IS DISTINCT FROM o.owner_id
               RETURNING s.iccid, s.vin
           ), touched AS (
               UPDATE vehicles SET updated_at = now() WHERE vin IN (SELECT vin FROM gone)
           )
           SELECT iccid FROM gone ORDER BY iccid""",
        {"iccids": list(iccids), "now": now},
    )
    return [r[0] for r in await cur.fetchall()]


# --- Driver links --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LinkRow:
    link_id: int
    vin: str
    driver_id: UUID
    invited_at: datetime
    accepted_at: datetime | None


async def open_link(conn: Connection, vin: str) -> LinkRow | None:
    """The vehicle's invited or accepted link, locked (at most one is open)."""
    async with conn.cursor(row_factory=class_row(LinkRow)) as cur:
        await cur.execute(
            """SELECT link_id, vin, driver_id, invited_at, accepted_at FROM vehicle_drivers
               WHERE vin = %s AND declined_at IS NULL AND ended_at IS NULL FOR UPDATE""",
            (vin,),
        )
        return await cur.fetchone()


async def invite(conn: Connection, vin: str, driver_id: UUID, at: datetime) -> None:
    await conn.execute(
        "INSERT INTO vehicle_drivers (vin, driver_id, invited_at) VALUES (%s, %s, %s)",
        (vin, driver_id, at),
    )


async def accept(conn: Connection, link_id: int, at: datetime) -> None:
    await conn.execute(
        "UPDATE vehicle_drivers SET accepted_at = %s WHERE link_id = %s", (at, link_id)
    )


async def decline(conn: Connection, link_id: int, at: datetime) -> None:
    await conn.execute(
        "UPDATE vehicle_drivers SET declined_at = %s WHERE link_id = %s", (at, link_id)
    )


async def end(conn: Connection, link_id: int, *, at: datetime, by: str) -> None:
    await conn.execute(
        "UPDATE vehicle_drivers SET ended_at = %s, ended_by = %s WHERE link_id = %s",
        (at, by, link_id),
    )


async def set_vehicle_driver(conn: Connection, vin: str, driver_id: UUID | None) -> None:
    await conn.execute(
        "UPDATE vehicles SET driver_id = %s, updated_at = now() WHERE vin = %s", (driver_id, vin)
    )


async def lock_vehicle(conn: Connection, vin: str) -> bool:
    cur = await conn.execute("SELECT 1 FROM vehicles WHERE vin = %s FOR UPDATE", (vin,))
    return await cur.fetchone() is not None


@dataclass(frozen=True, slots=True)
class InvitationRow:
    vin: str
    automaker_id: UUID
    model: str
    invited_at: datetime


async def invitations_of(
    conn: Connection, driver_id: UUID, *, after: str | None, limit: int | None
) -> list[InvitationRow]:
    """The driver's pending invitations by VIN."""
    async with conn.cursor(row_factory=class_row(InvitationRow)) as cur:
        await cur.execute(
            """SELECT d.vin, v.automaker_id, v.model, d.invited_at
               FROM vehicle_drivers d JOIN vehicles v USING (vin)
               WHERE d.driver_id = %s AND d.accepted_at IS NULL AND d.declined_at IS NULL
                 AND d.ended_at IS NULL AND d.vin > %s
               ORDER BY d.vin LIMIT %s""",
            (driver_id, after or "", limit),
        )
        return await cur.fetchall()
