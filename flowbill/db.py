"""Database access: one connection pool per process, one transaction owner per unit of work."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from psycopg import AsyncConnection
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool

from flowbill.settings import Settings

Connection = AsyncConnection[TupleRow]


async def _configure(conn: Connection) -> None:
    # Storage is UTC; a session default elsewhere must not change what date_trunc means.
    await conn.execute("SET TIME ZONE 'UTC'")
    await conn.commit()


def create_pool(settings: Settings, *, name: str = "flowbill") -> AsyncConnectionPool[Connection]:
    """A pool that is opened by the caller (`await pool.open(wait=True)`)."""
    return AsyncConnectionPool(
        settings.database_dsn,
        min_size=settings.database_pool_min,
        max_size=settings.database_pool_max,
        name=name,
        open=False,
        configure=_configure,
        kwargs={"application_name": name},
    )


async def connect(settings: Settings, *, application_name: str) -> Connection:
    """A single dedicated connection, for workers that own their transactions."""
    conn = await AsyncConnection.connect(
        settings.database_dsn, application_name=application_name, autocommit=False
    )
    await _configure(conn)
    return conn


@asynccontextmanager
async def transaction(pool: AsyncConnectionPool[Connection]) -> AsyncIterator[Connection]:
    """A pooled connection inside one transaction: committed on success, rolled back on error."""
    async with pool.connection() as conn, conn.transaction():
        yield conn
