"""Database access: one connection pool per process, one transaction owner per unit of work."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Literal

from psycopg import AsyncConnection
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool

from flowbill.settings import Settings

Connection = AsyncConnection[TupleRow]

# Whose statement_timeout a connection gets (FLOWBILL_<COMPONENT>_STATEMENT_TIMEOUT_SECONDS).
Component = Literal["api", "ingest", "billing", "webhooks"]


def component_of(settings: Settings, name: str) -> Component:
    """The component a connection of this application name belongs to: the API, the ingest
    workers (their client id, and their compaction), the webhook sender; everything else
    (billing, the periodic jobs, the command line) is batch work, under billing's limit."""
    if name == "flowbill-api":
        return "api"
    if name == settings.ingest_worker_id or name.startswith(
        ("flowbill-ingest", "flowbill-compaction")
    ):
        return "ingest"
    if name.startswith("flowbill-webhooks"):
        return "webhooks"
    return "billing"


def statement_timeout_ms(settings: Settings, component: Component) -> int:
    """The component's statement_timeout in milliseconds (0: none)."""
    seconds: float = getattr(settings, f"{component}_statement_timeout_seconds")
    return round(seconds * 1000)


def _session_options(settings: Settings, name: str, component: Component | None) -> str:
    # Set when the session starts (libpq `options`), so no statement of any connection runs
    # before its limit is in place, and no round trip is spent on it.
    timeout = statement_timeout_ms(settings, component or component_of(settings, name))
    return f"-c statement_timeout={timeout}"


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


def create_pool(
    settings: Settings, *, name: str = "flowbill", component: Component | None = None
) -> AsyncConnectionPool[Connection]:
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
        kwargs={
            "application_name": name,
            "options": _session_options(settings, name, component),
        },
    )


async def connect(
    settings: Settings,
    *,
    application_name: str,
    component: Component | None = None,
    owner: bool = False,
) -> Connection:
    """A single dedicated connection, for workers that own their transactions. In production
    it refuses a superuser's or the owner's login unless `owner` (maintenance that must own
    what it changes, such as dropping old chunks)."""
    conn = await AsyncConnection.connect(
        settings.database_dsn,
        application_name=application_name,
        autocommit=False,
        options=_session_options(settings, application_name, component),
    )
    await _configure(conn, refuse_privileged=_refuses_privileged(settings, owner))
    return conn


@asynccontextmanager
async def transaction(pool: AsyncConnectionPool[Connection]) -> AsyncIterator[Connection]:
    """A pooled connection inside one transaction: committed on success, rolled back on error."""
    async with pool.connection() as conn, conn.transaction():
        yield conn
