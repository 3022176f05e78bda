"""Breakage per funder and period, what expires soon, a merchant's data use (rolled back)."""

from __future__ import annotations

import secrets
import uuid
from datetime import UTC, date, datetime, timedelta

from flowbill.db import Connection
from flowbill.paging import MAX_LIMIT
from flowbill.periods import Calendar
from flowbill.units import MB
from wallet import reports, service

T0 = datetime(2026, 11, 1, 4, 0, tzinfo=UTC)
SHANGHAI = Calendar.of(time_zone="Asia/Shanghai", closing_days=3)


async def test_breakage_is_measured_per_funding_merchant(conn: Connection) -> None:
    merchant, other = str(uuid.uuid4()), str(uuid.uuid4())
    user = f"u-{secrets.token_hex(4)}"
    for funder in (merchant, other):
        await service.fund_pool(conn, key=secrets.token_hex(8), merchant=funder,
                                data_bytes=1000 * MB, price_minor=6000, currency="CNY")  # fmt: skip
    for funder, amount, days in (
        (merchant, 50 * MB, 10),
        (other, 30 * MB, 10),
        (merchant, 7 * MB, 400),
    ):
        await service.grant(
            conn, key=secrets.token_hex(8), funder=funder, user=user, data_bytes=amount,
            expires_at=T0 + timedelta(days=days), source="campaign:test", now=T0,
        )  # fmt: skip
    # 20 MB used from the earliest lot (the merchant's), the rest expires unused.
    await service.spend(conn, key=secrets.token_hex(8), user=user, data_bytes=20 * MB,
                        to_kind=service.AccountKind.EXCHANGE, to_owner="item", now=T0)  # fmt: skip
    soon = await reports.expiring(
        conn, now=T0, within=timedelta(days=30), calendar=SHANGHAI, limit=MAX_LIMIT, cursor=None
    )
    assert sum(d.data_bytes for d in soon.items) >= 60 * MB
    assert await service.expire_lots(conn, now=T0 + timedelta(days=11)) >= 2
    assert await service.expire_lots(conn, now=T0 + timedelta(days=11)) == 0  # idempotent
    today = datetime.now(UTC).date()
    lines = await reports.breakage(
        conn, since=date(today.year, today.month, 1), until=today + timedelta(days=2),
        calendar=SHANGHAI, limit=MAX_LIMIT, cursor=None,
    )  # fmt: skip
    mine = {(line.funder_kind, line.funder_id): line.data_bytes for line in lines.items}
    assert mine[("merchant", merchant)] == 30 * MB
    assert mine[("merchant", other)] == 30 * MB
    assert await service.balance(conn, user=user) == 7 * MB
    assert await service.check_books(conn) == []
