"""SQL of tenants and their API keys."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

from psycopg.rows import class_row

from flowbill.db import Connection


@dataclass(frozen=True, slots=True)
class TenantRow:
    tenant_id: UUID
    name: str
    role: str
    created_at: datetime
    disabled_at: datetime | None

    @property
    def disabled(self) -> bool:
        return self.disabled_at is not None


@dataclass(frozen=True, slots=True)
class ApiKeyRow:
    key_id: str
    tenant_id: UUID
    label: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


@dataclass(frozen=True, slots=True)
class KeyOwner:
    key_id: str
    secret_sha256: bytes
    last_used_at: datetime | None
    tenant_id: UUID
    name: str
    role: str


_TENANT_COLUMNS = "tenant_id, name, role, created_at, disabled_at"
_KEY_COLUMNS = "key_id, tenant_id, label, created_at, last_used_at, revoked_at"


async def insert_tenant(conn: Connection, *, name: str, role: str) -> TenantRow:
    async with conn.cursor(row_factory=class_row(TenantRow)) as cur:
        await cur.execute(
            f"INSERT INTO tenants (name, role) VALUES (%s, %s) RETURNING {_TENANT_COLUMNS}",
            (name, role),
        )
        row = await cur.fetchone()
    assert row is not None
    return row


async def get_tenant(conn: Connection, tenant_id: UUID) -> TenantRow | None:
    async with conn.cursor(row_factory=class_row(TenantRow)) as cur:
        await cur.execute(
            f"SELECT {_TENANT_COLUMNS} FROM tenants WHERE tenant_id = %s", (tenant_id,)
        )
        return await cur.fetchone()


async def list_tenants(
    conn: Connection, *, role: str | None, after: tuple[datetime, UUID] | None, limit: int
) -> list[TenantRow]:
    """Tenants (of a role, if given), oldest first, after the (created_at, tenant_id) key."""
    async with conn.cursor(row_factory=class_row(TenantRow)) as cur:
        await cur.execute(
            f"""SELECT {_TENANT_COLUMNS} FROM tenants
                WHERE (%(role)s::text IS NULL OR role = %(role)s)
                  AND (%(at)s::timestamptz IS NULL OR (created_at, tenant_id) > (%(at)s, %(id)s))
                ORDER BY created_at, tenant_id LIMIT %(limit)s""",
            {"role": role, "at": after and after[0], "id": after and after[1], "limit": limit},
        )
        return await cur.fetchall()


async def set_tenant_disabled(
    conn: Connection, tenant_id: UUID, *, disabled: bool
) -> TenantRow | None:
    async with conn.cursor(row_factory=class_row(TenantRow)) as cur:
        await cur.execute(
            f"""UPDATE tenants SET disabled_at = CASE WHEN %s THEN coalesce(disabled_at, now())
                END WHERE tenant_id = %s RETURNING {_TENANT_COLUMNS}""",
            (disabled, tenant_id),
        )
        return await cur.fetchone()


async def insert_key(
    conn: Connection, *, key_id: str, tenant_id: UUID, secret_sha256: bytes, label: str
) -> ApiKeyRow:
    async with conn.cursor(row_factory=class_row(ApiKeyRow)) as cur:
        await cur.execute(
            f"""INSERT INTO api_keys (key_id, tenant_id, secret_sha256, label)
                VALUES (%s, %s, %s, %s) RETURNING {_KEY_COLUMNS}""",
            (key_id, tenant_id, secret_sha256, label),
        )
        row = await cur.fetchone()
    assert row is not None
    return row


async def list_keys(
    conn: Connection, tenant_id: UUID, *, after: tuple[datetime, str] | None, limit: int
) -> list[ApiKeyRow]:
    """The tenant's keys, oldest first, after the (created_at, key_id) key."""
    async with conn.cursor(row_factory=class_row(ApiKeyRow)) as cur:
        await cur.execute(
            f"""SELECT {_KEY_COLUMNS} FROM api_keys
                WHERE tenant_id = %(tenant)s
                  AND (%(at)s::timestamptz IS NULL OR (created_at, key_id) > (%(at)s, %(id)s))
                ORDER BY created_at, key_id LIMIT %(limit)s""",
            {"tenant": tenant_id, "at": after and after[0], "id": after and after[1],
             "limit": limit},
        )  # fmt: skip
        return await cur.fetchall()


async def revoke_key(conn: Connection, *, tenant_id: UUID, key_id: str) -> ApiKeyRow | None:
    async with conn.cursor(row_factory=class_row(ApiKeyRow)) as cur:
        await cur.execute(
            f"""UPDATE api_keys SET revoked_at = coalesce(revoked_at, now())
                WHERE tenant_id = %s AND key_id = %s RETURNING {_KEY_COLUMNS}""",
            (tenant_id, key_id),
        )
        return await cur.fetchone()


async def find_active_key(conn: Connection, key_id: str) -> KeyOwner | None:
    """The key and its tenant, if neither is revoked or disabled."""
    async with conn.cursor(row_factory=class_row(KeyOwner)) as cur:
        await cur.execute(
            """SELECT k.key_id, k.secret_sha256, k.last_used_at, t.tenant_id, t.name, t.role
               FROM api_keys k JOIN tenants t USING (tenant_id)
               WHERE k.key_id = %s AND k.revoked_at IS NULL AND t.disabled_at IS NULL""",
            (key_id,),
        )
        return await cur.fetchone()


async def touch_key(conn: Connection, key_id: str, *, every: timedelta) -> None:
    """Record that the key was used, unless it was within `every`; never waits for another
    request that is recording it (SKIP LOCKED)."""
    await conn.execute(
        """UPDATE api_keys SET last_used_at = now()
           WHERE key_id = (SELECT key_id FROM api_keys
                           WHERE key_id = %s AND (last_used_at IS NULL OR last_used_at < now() - %s)
                           FOR UPDATE SKIP LOCKED)""",
        (key_id, every),
    )
