"""SQL of device credentials: the desired state the broker is brought in line with."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from psycopg.rows import class_row

from flowbill.db import Connection


@dataclass(frozen=True, slots=True)
class CredentialRow:
    credential_id: int
    iccid: str
    kind: str
    serial: str | None
    fingerprint_sha256: str | None
    not_after: datetime | None
    issued_at: datetime
    retires_at: datetime | None
    revoked_at: datetime | None


_COLUMNS = """credential_id, iccid, kind, serial, fingerprint_sha256, not_after, issued_at,
              retires_at, revoked_at"""


@dataclass(frozen=True, slots=True)
class NewCredential:
    iccid: str
    kind: str
    password_hash: str | None = None
    serial: str | None = None
    fingerprint_sha256: str | None = None
    not_after: datetime | None = None


async def provisioned(conn: Connection, iccids: Sequence[str]) -> list[str]:
    """The provisioned ones of these SIMs, locked in ICCID order: two requests for one SIM's
    credentials take turns."""
    cur = await conn.execute(
        "SELECT iccid FROM sims WHERE iccid = ANY(%s) ORDER BY iccid FOR UPDATE", (list(iccids),)
    )
    return [r[0] for r in await cur.fetchall()]


async def current(conn: Connection, iccids: Sequence[str]) -> dict[str, CredentialRow]:
    """Each SIM's current credential (neither rotated out nor revoked), if it has one."""
    async with conn.cursor(row_factory=class_row(CredentialRow)) as cur:
        await cur.execute(
            f"""SELECT {_COLUMNS} FROM device_credentials
                WHERE iccid = ANY(%s) AND retires_at IS NULL AND revoked_at IS NULL""",
            (list(iccids),),
        )
        return {row.iccid: row for row in await cur.fetchall()}


async def insert(conn: Connection, rows: Sequence[NewCredential], *, now: datetime) -> None:
    """New current credentials, in one round trip however many."""
    async with (
        conn.cursor() as cur,
        cur.copy(
            """COPY device_credentials (iccid, kind, password_hash, serial, fingerprint_sha256,
                                        not_after, issued_at) FROM STDIN"""
        ) as copy,
    ):
        for r in rows:
            values = (r.iccid, r.kind, r.password_hash, r.serial, r.fingerprint_sha256)
            await copy.write_row((*values, r.not_after, now))


async def retire(conn: Connection, credential_ids: Sequence[int], *, at: datetime) -> None:
    """Rotate these out: accepted until `at`."""
    await conn.execute(
        """UPDATE device_credentials SET retires_at = %s, changed_at = clock_timestamp()
           WHERE credential_id = ANY(%s)""",
        (at, list(credential_ids)),
    )


async def revoke_all(conn: Connection, iccid: str, *, now: datetime) -> list[CredentialRow]:
    """Revoke every credential of the SIM not revoked yet (the current one and any still in
    its overlap); returns them."""
    async with conn.cursor(row_factory=class_row(CredentialRow)) as cur:
        await cur.execute(
            f"""UPDATE device_credentials SET revoked_at = %s, changed_at = clock_timestamp()
                WHERE iccid = %s AND revoked_at IS NULL
                  AND (retires_at IS NULL OR retires_at > %s)
                RETURNING {_COLUMNS}""",
            (now, iccid, now),
        )
        return list(await cur.fetchall())


async def history(conn: Connection, iccid: str) -> list[CredentialRow]:
    async with conn.cursor(row_factory=class_row(CredentialRow)) as cur:
        await cur.execute(
            f"""SELECT {_COLUMNS} FROM device_credentials WHERE iccid = %s
                ORDER BY credential_id""",
            (iccid,),
        )
        return list(await cur.fetchall())


# --- The broker's desired state --------------------------------------------------------------


async def state_mark(conn: Connection, *, now: datetime) -> tuple[object, ...]:
    """Changes whenever the desired state does: a write, or an overlap running out."""
    cur = await conn.execute(
        """SELECT max(changed_at), count(*) FILTER (WHERE retires_at <= %s),
                  count(*) FILTER (WHERE not_after <= %s)
           FROM device_credentials""",
        (now, now),
    )
    row = await cur.fetchone()
    assert row is not None
    return tuple(row)


async def live_passwords(conn: Connection, *, now: datetime) -> list[tuple[str, str]]:
    """(ICCID, broker hash) of every password the broker should accept now, by ICCID."""
    cur = await conn.execute(
        """SELECT iccid, password_hash FROM device_credentials
           WHERE kind = 'password' AND revoked_at IS NULL
             AND (retires_at IS NULL OR retires_at > %s)
           ORDER BY iccid, credential_id""",
        (now,),
    )
    return [(r[0], r[1]) for r in await cur.fetchall()]


async def refused_certificates(
    conn: Connection, *, now: datetime
) -> list[tuple[str, str, datetime]]:
    """(ICCID, serial, since when) of every unexpired certificate the broker must refuse:
    revoked, or rotated out and past its overlap."""
    cur = await conn.execute(
        """SELECT iccid, serial, least(revoked_at, retires_at)
           FROM device_credentials
           WHERE kind = 'certificate' AND not_after > %s
             AND (revoked_at IS NOT NULL OR retires_at <= %s)
           ORDER BY serial""",
        (now, now),
    )
    return [(r[0], r[1], r[2]) for r in await cur.fetchall()]
