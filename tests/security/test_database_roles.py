"""Least privilege in the database, against the session's real cluster: the API, the ingest
workers, the allocation run and the webhook sender each connect as a role of their own
(migration 0029) that is no superuser, cannot create, change or drop objects, cannot run
server programs, reads only what its component needs, and never rewrites the ledger. Every
refused statement changes nothing. And the local stack asks every TCP login for a password."""

from __future__ import annotations

import contextlib
import stat
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import errors

from devstack import localstack
from flowbill.settings import Settings
from tests.conftest import as_component

COMPONENTS = ("api", "ingest", "billing", "webhooks")

# What each component never needs to read (each in its own transaction: a refusal aborts it).
NEVER_READS = {
    "api": ["_yoyo_migration", "_yoyo_log"],
    "ingest": ["api_keys", "tenants", "ledger_entries", "wallet_lots", "web_sessions",
               "iot_id_holders", "policies", "webhook_endpoints"],
    "billing": ["api_keys", "web_sessions", "web_sign_in_links", "iot_id_holders",
                "iot_verifications", "device_credentials", "_yoyo_migration"],
    "webhooks": ["api_keys", "tenants", "ledger_entries", "usage_items", "iot_id_holders",
                 "web_sessions", "allocations"],
}  # fmt: skip

# Statements no component may run: objects, programs, other roles, the ledger's history.
FORBIDDEN = [
    "COPY (SELECT 1) TO PROGRAM 'id'",
    "CREATE TABLE public.intruder (x int)",
    "CREATE FUNCTION public.intruder() RETURNS int LANGUAGE sql AS 'SELECT 1'",
    "DROP TABLE tenants",
    "ALTER TABLE usage_items ADD COLUMN intruder int",
    "TRUNCATE usage_items",
    "CREATE ROLE intruder",
    "GRANT flowbill_api TO flowbill_ingest",
    "DELETE FROM ledger_entries",
    "UPDATE ledger_entries SET amount = 0",
    "SELECT lo_import('/etc/passwd')",
]


@contextlib.asynccontextmanager
async def connected(settings: Settings, component: str) -> AsyncIterator[psycopg.AsyncConnection]:
    conn = await psycopg.AsyncConnection.connect(
        as_component(settings, component).database_dsn, autocommit=True
    )
    try:
        yield conn
    finally:
        await conn.close()


async def shape(conn: psycopg.AsyncConnection) -> tuple[object, ...]:
    """The schema's objects and the ledger's and usage's size: what a refusal must not move."""
    cur = await conn.execute(
        """SELECT (SELECT array_agg(c.relname ORDER BY c.relname) FROM pg_class c
                   JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public'),
                  (SELECT array_agg(rolname ORDER BY rolname) FROM pg_roles),
                  (SELECT count(*) FROM ledger_entries), (SELECT sum(amount) FROM ledger_entries),
                  (SELECT count(*) FROM usage_items), (SELECT count(*) FROM tenants)"""
    )
    row = await cur.fetchone()
    assert row is not None
    return tuple(row)


@pytest.mark.parametrize("component", COMPONENTS)
async def test_a_component_role_is_no_superuser_and_may_not_create_drop_or_run_programs(
    component: str, settings: Settings, committed_conn: psycopg.AsyncConnection
) -> None:
    before = await shape(committed_conn)
    async with connected(settings, component) as conn:
        cur = await conn.execute(
            """SELECT rolsuper, rolcreatedb, rolcreaterole, rolbypassrls,
                      pg_has_role(current_user, 'pg_execute_server_program', 'MEMBER'),
                      pg_has_role(current_user, 'pg_read_server_files', 'MEMBER'),
                      EXISTS (SELECT FROM pg_class
                         WHERE relowner = r.oid AND relpersistence <> 't')
               FROM pg_roles r WHERE rolname = current_user"""
        )
        assert await cur.fetchone() == (False,) * 7
        for statement in FORBIDDEN:
            with pytest.raises(errors.InsufficientPrivilege):
                await conn.execute(statement)
    assert await shape(committed_conn) == before


@pytest.mark.parametrize("component", COMPONENTS)
async def test_a_component_reads_only_the_tables_it_needs(
    component: str, settings: Settings, committed_conn: psycopg.AsyncConnection
) -> None:
    before = await shape(committed_conn)
    async with connected(settings, component) as conn:
        for table in NEVER_READS[component]:
            with pytest.raises(errors.InsufficientPrivilege):
                await conn.execute(f"SELECT 1 FROM {table} LIMIT 1")
    assert await shape(committed_conn) == before


async def test_each_component_reads_what_it_needs(settings: Settings) -> None:
    # The other side of the line above: the services' own queries run (the whole suite runs
    # them as these roles), and a few reads show the line sits where the docs say.
    needs = {
        "api": ["api_keys", "tenants", "ledger_entries", "usage_items", "iot_id_holders"],
        "ingest": ["sims", "usage_items", "usage_reports", "ingest_rejects", "sim_boots"],
        "billing": ["allocations", "ledger_entries", "wallet_lots", "vehicles", "policies"],
        "webhooks": ["webhook_endpoints", "webhook_messages", "webhook_attempts"],
    }
    for component, tables in needs.items():
        async with connected(settings, component) as conn:
            for table in tables:
                await conn.execute(f"SELECT 1 FROM {table} LIMIT 1")


async def test_every_tcp_login_needs_its_password_and_the_stack_keeps_them_private(
    stack: localstack.LocalStack, settings: Settings
) -> None:
    url = urlsplit(settings.database_dsn)
    for role in ["flowbill", *localstack.COMPONENT_ROLES.values()]:
        for password in ("", "wrong-password"):
            netloc = (
                f"{role}:{password}@{url.hostname}:{url.port}"
                if password
                else (f"{role}@{url.hostname}:{url.port}")
            )
            with pytest.raises(psycopg.OperationalError, match="password"):
                await psycopg.AsyncConnection.connect(
                    urlunsplit(url._replace(netloc=netloc)), connect_timeout=5
                )
    root = stack.root
    for secret in (root / "flowbill.env", root / "db-passwords.json"):
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600, secret
    # The state folder: nobody else may list, read or write in it (as root, the cluster's
    # server runs as `postgres`, and may pass through it on the way to its data folder).
    assert stat.S_IMODE(root.stat().st_mode) & 0o066 == 0
