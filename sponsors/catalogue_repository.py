"""SQL of the app catalogue (table `catalogue_apps`): read and written only through
`sponsors.catalogue`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from psycopg.rows import class_row

from flowbill.db import Connection


@dataclass(frozen=True, slots=True)
class CatalogueRow:
    app: str
    category: str
    name: str
    updated_at: datetime


async def upsert_app(conn: Connection, *, app: str, category: str, name: str) -> CatalogueRow:
    async with conn.cursor(row_factory=class_row(CatalogueRow)) as cur:
        await cur.execute(
            """INSERT INTO catalogue_apps (app, category, name) VALUES (%s, %s, %s)
               ON CONFLICT (app) DO UPDATE
               SET category = excluded.category, name = excluded.name, updated_at = now()
               RETURNING app, category, name, updated_at""",
            (app, category, name),
        )
        row = await cur.fetchone()
        assert row is not None
        return row


async def catalogue(
    conn: Connection, *, after: str | None = None, limit: int | None = None
) -> list[CatalogueRow]:
    """Catalogued apps by app id: all of them, or `limit` after the app `after`."""
    async with conn.cursor(row_factory=class_row(CatalogueRow)) as cur:
        await cur.execute(
            "SELECT app, category, name, updated_at FROM catalogue_apps"
            " WHERE %(after)s::text IS NULL OR app > %(after)s ORDER BY app LIMIT %(limit)s",
            {"after": after, "limit": limit},
        )
        return await cur.fetchall()


async def delete_app(conn: Connection, app: str) -> bool:
    cur = await conn.execute("DELETE FROM catalogue_apps WHERE app = %s", (app,))
    return cur.rowcount > 0
