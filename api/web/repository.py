"""SQL of the driver page's browser sessions and one-time sign-in links (migrations/0015,
0021: each names the API key it came from)."""

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


@dataclass(frozen=True, slots=True)
class LinkRow:
    tenant_id: UUID
    key_id: str
    name: str
    expires_at: datetime
    used_at: datetime | None
    # The key was revoked or the tenant disabled since the link was made.
    stopped: bool


# A session or link counts only while its key is not revoked and its tenant not disabled:
# checked in SQL at every use, so a revocation committed by any process holds at once.
_KEY_LIVE = """JOIN api_keys k ON k.key_id = {alias}.key_id AND k.tenant_id = {alias}.tenant_id
               JOIN tenants t ON t.tenant_id = {alias}.tenant_id"""
_KEY_LIVE_WHERE = "k.revoked_at IS NULL AND t.disabled_at IS NULL"


async def insert_session(
    conn: Connection,
    *,
    token_hash: bytes,
    tenant_id: UUID,
    key_id: str,
    csrf_token: str,
    expires_at: datetime,
) -> bool:
    """Open a session; False (nothing opened) if the key was revoked or its tenant disabled
    meanwhile, whatever a process's key cache still believes."""
    cur = await conn.execute(
        """INSERT INTO web_sessions (token_hash, tenant_id, key_id, csrf_token, expires_at)
           SELECT %s, k.tenant_id, k.key_id, %s, %s
           FROM api_keys k JOIN tenants t USING (tenant_id)
           WHERE k.key_id = %s AND k.tenant_id = %s
             AND k.revoked_at IS NULL AND t.disabled_at IS NULL""",
        (token_hash, csrf_token, expires_at, key_id, tenant_id),
    )
    return cur.rowcount == 1


async def live_session(conn: Connection, *, token_hash: bytes, now: datetime) -> SessionRow | None:
    """The session of the token, if it has not ended or expired, its key is not revoked and
    its tenant is enabled."""
    async with conn.cursor(row_factory=class_row(SessionRow)) as cur:
        await cur.execute(
            f"""SELECT s.tenant_id, t.name, t.role, s.csrf_token, s.expires_at
                FROM web_sessions s {_KEY_LIVE.format(alias="s")}
                WHERE s.token_hash = %s AND s.ended_at IS NULL AND s.expires_at > %s
                  AND {_KEY_LIVE_WHERE}""",
            (token_hash, now),
        )
        return await cur.fetchone()


async def end_session(conn: Connection, *, token_hash: bytes, now: datetime) -> None:
    await conn.execute(
        "UPDATE web_sessions SET ended_at = %s WHERE token_hash = %s AND ended_at IS NULL",
        (now, token_hash),
    )


async def end_sessions(
    conn: Connection, *, tenant_id: UUID, key_id: str | None, now: datetime
) -> int:
    """End the tenant's open sessions (those of one key, if given) and delete its unused
    sign-in links; returns how many sessions ended."""
    cur = await conn.execute(
        """UPDATE web_sessions SET ended_at = %(now)s
           WHERE tenant_id = %(tenant)s AND ended_at IS NULL AND expires_at > %(now)s
             AND (%(key)s::text IS NULL OR key_id = %(key)s)""",
        {"tenant": tenant_id, "key": key_id, "now": now},
    )
    ended = cur.rowcount
    await conn.execute(
        """DELETE FROM web_sign_in_links
           WHERE tenant_id = %(tenant)s AND used_at IS NULL
             AND (%(key)s::text IS NULL OR key_id = %(key)s)""",
        {"tenant": tenant_id, "key": key_id},
    )
    return ended


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
    conn: Connection, *, token_hash: bytes, tenant_id: UUID, key_id: str, expires_at: datetime
) -> bool:
    """Make a link; False (nothing made) if the key was revoked or its tenant disabled."""
    cur = await conn.execute(
        """INSERT INTO web_sign_in_links (token_hash, tenant_id, key_id, expires_at)
           SELECT %s, k.tenant_id, k.key_id, %s
           FROM api_keys k JOIN tenants t USING (tenant_id)
           WHERE k.key_id = %s AND k.tenant_id = %s
             AND k.revoked_at IS NULL AND t.disabled_at IS NULL""",
        (token_hash, expires_at, key_id, tenant_id),
    )
    return cur.rowcount == 1


async def find_link(conn: Connection, *, token_hash: bytes) -> LinkRow | None:
    """The link of the token, used or not, without consuming it."""
    async with conn.cursor(row_factory=class_row(LinkRow)) as cur:
        await cur.execute(
            f"""SELECT l.tenant_id, l.key_id, t.name, l.expires_at, l.used_at,
                       NOT ({_KEY_LIVE_WHERE}) AS stopped
                FROM web_sign_in_links l {_KEY_LIVE.format(alias="l")}
                WHERE l.token_hash = %s""",
            (token_hash,),
        )
        return await cur.fetchone()


async def use_link(conn: Connection, *, token_hash: bytes, now: datetime) -> LinkRow | None:
    """Mark the link used and return it, if it was unused, unexpired, its key not revoked and
    its tenant enabled; a second use (even a concurrent one) finds nothing."""
    async with conn.cursor(row_factory=class_row(LinkRow)) as cur:
        await cur.execute(
            f"""UPDATE web_sign_in_links l SET used_at = %(now)s
                FROM api_keys k, tenants t
                WHERE l.token_hash = %(hash)s AND l.used_at IS NULL AND l.expires_at > %(now)s
                  AND k.key_id = l.key_id AND k.tenant_id = l.tenant_id
                  AND t.tenant_id = l.tenant_id AND {_KEY_LIVE_WHERE}
                RETURNING l.tenant_id, l.key_id, t.name, l.expires_at, l.used_at,
                          false AS stopped""",
            {"now": now, "hash": token_hash},
        )
        return await cur.fetchone()
