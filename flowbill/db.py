"""Database access: one connection pool per process, one transaction owner per unit of work."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from psycopg import AsyncConnection
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool

from flowbill.settings import Settings

Connection = AsyncConnection[TupleRow]


class PrivilegedDatabaseRole(RuntimeError):
    """A component was given a superuser's or the schema owner's database login."""


async def _configure(conn: Connection, *, refuse_privileged: bool = False) -> None:
    # Storage is UTC; a session default elsewhere must not change what date_trunc means.
    await conn.execute("SET TIME ZONE 'UTC'")
    if refuse_privileged:
        cur = await conn.execute(
            """SELECT rolsuper OR EXISTS (SELECT FROM pg_class
                         WHERE relowner = r.oid AND relpersistence <> 't')
               FROM pg_roles r WHERE rolname = current_user"""
        )
        row = await cur.fetchone()
        if row is None or row[0]:
            await conn.close()
            raise PrivilegedDatabaseRole(
                "in production a component connects as its own role (flowbill_api, "
                "flowbill_ingest, flowbill_billing, flowbill_webhooks), never as a superuser "
                "or the owner that runs the migrations: see docs/operations.md, Database roles"
            )
    await conn.commit()


def _refuses_privileged(settings: Settings, owner: bool) -> bool:
    return settings.environment == "production" and not owner


def create_pool(settings: Settings, *, name: str = "flowbill") -> AsyncConnectionPool[Connection]:
    """A pool that is opened by the caller (`await pool.open(wait=True)`). In production
    its connections refuse a superuser's or the owner's login."""
    refuse = _refuses_privileged(settings, owner=False)

    async def configure(conn: Connection) -> None:
        await _configure(conn, refuse_privileged=refuse)

    return AsyncConnectionPool(
        settings.database_dsn,
        min_size=settings.database_pool_min,
        max_size=settings.database_pool_max,
        name=name,
        open=False,
        configure=configure,
        kwargs={"application_name": name},
    )


async def connect(settings: Settings, *, application_name: str, owner: bool = False) -> Connection:
    """A single dedicated connection, for workers that own their transactions. In production
    it refuses a superuser's or the owner's login unless `owner` (maintenance that must own
    what it changes, such as dropping old chunks)."""
    conn = await AsyncConnection.connect(
        settings.database_dsn, application_name=application_name, autocommit=False
    )
    await _configure(conn, refuse_privileged=_refuses_privileged(settings, owner))
    return conn


@asynccontextmanager
async def transaction(pool: AsyncConnectionPool[Connection]) -> AsyncIterator[Connection]:
    """A pooled connection inside one transaction: committed on success, rolled back on error."""
    async with pool.connection() as conn, conn.transaction():
        yield conn
