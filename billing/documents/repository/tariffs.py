"""SQL of the operator's tariffs."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from psycopg.rows import class_row

from flowbill.db import Connection


@dataclass(frozen=True, slots=True)
class TariffRow:
    effective_from: datetime
    currency: str
    wholesale_per_mb: Decimal
    overage_per_mb: Decimal
    rounding_unit_bytes: int
    rounding_scope: str
    created_at: datetime


_TARIFF = (
    "effective_from, currency, wholesale_per_mb, overage_per_mb, rounding_unit_bytes,"
    " rounding_scope, created_at"
)


async def insert_tariff(conn: Connection, row: TariffRow) -> TariffRow:
    async with conn.cursor(row_factory=class_row(TariffRow)) as cur:
        await cur.execute(
            f"""INSERT INTO tariffs (effective_from, currency, wholesale_per_mb, overage_per_mb,
                                     rounding_unit_bytes, rounding_scope)
                VALUES (%s, %s, %s, %s, %s, %s) RETURNING {_TARIFF}""",
            (row.effective_from, row.currency, row.wholesale_per_mb, row.overage_per_mb,
             row.rounding_unit_bytes, row.rounding_scope),
        )  # fmt: skip
        found = await cur.fetchone()
        assert found is not None
        return found


async def tariffs(conn: Connection) -> list[TariffRow]:
    async with conn.cursor(row_factory=class_row(TariffRow)) as cur:
        await cur.execute(f"SELECT {_TARIFF} FROM tariffs ORDER BY effective_from")
        return await cur.fetchall()


async def tariff_until(conn: Connection, tariff_from: datetime) -> tuple[bool, datetime | None]:
    """(the tariff exists, when the next one starts)."""
    cur = await conn.execute(
        """
        SELECT (SELECT true FROM tariffs WHERE effective_from = %(f)s),
               (SELECT min(effective_from) FROM tariffs WHERE effective_from > %(f)s)
        """,
        {"f": tariff_from},
    )
    row = await cur.fetchone()
    assert row is not None
    return bool(row[0]), row[1]


async def platform_currency(conn: Connection) -> str:
    """The currency of the latest tariff."""
    cur = await conn.execute("SELECT currency FROM tariffs ORDER BY effective_from DESC LIMIT 1")
    row = await cur.fetchone()
    return str(row[0]) if row else "CNY"
