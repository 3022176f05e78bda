"""SQL of the driver page's browser sessions and one-time sign-in links (migrations/0015)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from psycopg.rows import class_row

from flowbill.db import Connection


@dataclass(frozen=True, slots=True)
class SessionRow:
    tenant_id: UUID
    name: str
    role: str
    csrf_token: str
    expires_at: datetime


async def insert_session(
    conn: Connection, *, token_hash: bytes, tenant_id: UUID, csrf_token: str, expires_at: datetime
) -> None:
    await conn.execute(
        """INSERT INTO web_sessions (token_hash, tenant_id, csrf_token, expires_at)
           VALUES (%s, %s, %s, %s)""",
        (token_hash, tenant_id, csrf_token, expires_at),
    )


async def live_session(conn: Connection, *, token_hash: bytes, now: datetime) -> SessionRow | None:
    """The session of the token, if it has not ended or expired and its tenant is enabled."""
    async with conn.cursor(row_factory=class_row(SessionRow)) as cur:
        await cur.execute(
            """SELECT s.tenant_id, t.name, t.role, s.csrf_token, s.expires_at
               FROM web_sessions s JOIN tenants t USING (tenant_id)
               WHERE s.token_hash = %s AND s.ended_at IS NULL AND s.expires_at > %s
                 AND t.disabled_at IS NULL""",
            (token_hash, now),
        )
        return await cur.fetchone()


async def end_session(conn: Connection, *, token_hash: bytes, now: datetime) -> None:
    await conn.execute(
        "UPDATE web_sessions SET ended_at = %s WHERE token_hash = %s AND ended_at IS NULL",
        (now, token_hash),
    )


async def delete_expired(conn: Connection, *, before: datetime) -> None:
    # Bounded, so that a sign-in never waits on a large clean-up.
    await conn.execute(
        """DELETE FROM web_sessions WHERE token_hash IN (
               SELECT token_hash FROM web_sessions WHERE expires_at < %s LIMIT 1000)""",
        (before,),
    )
    await conn.execute(
        """DELETE FROM web_sign_in_links WHERE token_hash IN (
               SELECT token_hash FROM web_sign_in_links WHERE expires_at < %s LIMIT 1000)""",
        (before,),
    )


async def insert_link(
    conn: Connection, *, token_hash: bytes, tenant_id: UUID, expires_at: datetime
) -> None:
    await conn.execute(
        """INSERT INTO web_sign_in_links (token_hash, tenant_id, expires_at)
           VALUES (%s, %s, %s)""",
        (token_hash, tenant_id, expires_at),
    )


async def use_link(conn: Connection, *, token_hash: bytes, now: datetime) -> UUID | None:
    """Mark the link used and return its tenant, if it was unused, unexpired and the tenant
    is enabled; a second use finds nothing."""
    cur = await conn.execute(
        """UPDATE web_sign_in_links l SET used_at = %s
           FROM tenants t
           WHERE l.token_hash = %s AND l.used_at IS NULL AND l.expires_at > %s
             AND t.tenant_id = l.tenant_id AND t.disabled_at IS NULL
           RETURNING l.tenant_id""",
        (now, token_hash, now),
    )
    row = await cur.fetchone()
    return None if row is None else UUID(str(row[0]))
