"""Allocation under concurrent spending: a driver who redeems, returns or tops up while a batch
allocates their traffic (or the expiry sweep runs) must not make the batch fail. Before, the
batch read balances unlocked and drew at its end: any spend in between rolled it back, and five
in a row stopped `flowbill bill` for everyone."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest

from billing.allocation import batches
from flowbill.settings import Settings
from flowbill.units import MB
from tests.billing.cars import Car, bill
from tests.wallet.factories import carrier
from wallet import service, withdrawals
from wallet.errors import InsufficientBalance
from wallet.schemas import TopUpRequest
from wallet.service import AccountKind

pytestmark = pytest.mark.usefixtures("ingest_workers")

DRIVERS = 3
WALLET_MB = 200
CONNECTIONS = 10
# How long each batch holds still between computing its shares and drawing the wallets: the
# window in which the spenders below hit the same wallets.
HOLD_SECONDS = 0.2

Operation = Callable[[psycopg.AsyncConnection], Awaitable[object]]


async def fetch_one(conn: psycopg.AsyncConnection, sql: str, params: tuple[Any, ...]) -> Any:
    cur = await conn.execute(sql, params)
    row = await cur.fetchone()
    assert row is not None
    return row[0]


async def test_the_run_never_fails_while_its_drivers_redeem_return_and_expire(
    http: httpx.AsyncClient,
    settings: Settings,
    operator_key: str,
    committed_conn: psycopg.AsyncConnection,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    cars = [
        await Car(http, settings).open(operator_key, wallet_mb=WALLET_MB) for _ in range(DRIVERS)
    ]
    drivers = [car.driver_id for car in cars]
    carrier_id = await carrier(http, operator_key)
    now = datetime.now(UTC)
    # Each driver also holds a lot that has just expired (for the sweep), and made three
    # redemptions before the run (to be returned during it).
    merchant = f"m-{secrets.token_hex(6)}"
    earlier: list[service.Spent] = []
    async with committed_conn.transaction():
        await service.fund_pool(
            committed_conn, key=secrets.token_hex(8), merchant=merchant,
            data_bytes=10 * WALLET_MB * MB, price_minor=100, currency="CNY",
        )  # fmt: skip
        for user in drivers:
            await service.grant(
                committed_conn, key=secrets.token_hex(8), funder=merchant, user=user,
                data_bytes=7 * MB, expires_at=now - timedelta(seconds=30), source="property",
                now=now - timedelta(minutes=1),
            )  # fmt: skip
            for _ in range(3):
                earlier.append(await redeem(committed_conn, user, 2 * MB))
    for car in cars:
        await car.send(
            committed_conn,
            [car.report({"wifi.hotspot": 50 * MB, "video.iqiyi": 30 * MB}) for _ in range(3)],
        )

    # The drivers ask for more than their wallets hold (traffic 240 MB, redemptions about
    # 50 MB, against 194 MB each): a batch draws what is left to the last byte, so any spend
    # between its read and its draw would leave the draw short.
    operations: list[Operation] = []
    for n in range(50):
        user = drivers[n % DRIVERS]
        if n % 5 == 4:
            operations.append(lambda c, u=user: top_up(c, u, carrier_id))
        else:
            operations.append(lambda c, u=user: redeem(c, u, 3 * MB))
    for spent in earlier:
        operations.append(lambda c, s=spent: returned(c, s))
    operations.append(lambda c: service.expire_lots(c, now=datetime.now(UTC)))
    operations = [operations[i] for i in _shuffled(len(operations))]

    batch_running = asyncio.Event()
    real_add_daily = batches.repository.add_daily

    async def held(conn: Any, rows: Any) -> None:
        batch_running.set()
        await asyncio.sleep(HOLD_SECONDS)
        await real_add_daily(conn, rows)

    monkeypatch.setattr(batches.repository, "add_daily", held)
    outcomes: list[str] = []

    async def spender() -> None:
        async with await psycopg.AsyncConnection.connect(settings.database_dsn) as conn:
            await batch_running.wait()
            while operations:
                operation = operations.pop()
                try:
                    async with conn.transaction():
                        await operation(conn)
                    outcomes.append("done")
                except InsufficientBalance:
                    outcomes.append("refused")

    caplog.set_level(logging.WARNING, logger="billing.allocation.worker")
    async with asyncio.timeout(60):
        spending = [asyncio.create_task(spender()) for _ in range(CONNECTIONS)]
        # One ingest transaction per batch: several batches, each overlapping the spenders.
        await bill(settings, billing_batch_items=1)
        await asyncio.gather(*spending)

    assert len(outcomes) == 50 + len(earlier) + 1
    assert "done" in outcomes
    # No batch failed, not even once to be retried.
    assert [r.getMessage() for r in caplog.records if "retried" in r.getMessage()] == []

    iccids = [car.iccid for car in cars]
    # Every stored byte allocated exactly once: per item, the allocations sum to the item.
    cur = await committed_conn.execute(
        """
        SELECT count(*) FROM usage_items u
        LEFT JOIN (SELECT window_start, iccid, boot, seq, app, sum(bytes) AS bytes
                   FROM allocations WHERE iccid = ANY(%s) GROUP BY 1, 2, 3, 4, 5) a
               USING (window_start, iccid, boot, seq, app)
        WHERE u.iccid = ANY(%s) AND a.bytes IS DISTINCT FROM u.up_bytes + u.down_bytes
        """,
        (iccids, iccids),
    )
    assert await cur.fetchone() == (0,)
    stored = await fetch_one(
        committed_conn,
        "SELECT sum(up_bytes + down_bytes) FROM usage_items WHERE iccid = ANY(%s)",
        (iccids,),
    )
    allocated = await fetch_one(
        committed_conn, "SELECT sum(bytes) FROM allocations WHERE iccid = ANY(%s)", (iccids,)
    )
    assert allocated == stored == DRIVERS * 3 * 80 * MB
    for car in cars:
        paid = await car.paid(committed_conn)
        # What the allocation rows charge the wallet is what the ledger drew from it.
        drawn = await fetch_one(
            committed_conn,
            """
            SELECT coalesce(-sum(e.amount), 0) FROM ledger_entries e
            JOIN ledger_transactions t USING (txn_id) JOIN ledger_accounts a USING (account_id)
            WHERE a.kind = 'user_wallet' AND a.owner = %s AND t.idempotency_key LIKE 'billing:%%'
            """,
            (car.driver_id,),
        )
        assert paid.get(("wallet", car.driver_id), 0) == drawn
        assert paid.get(("wallet", car.driver_id), 0) > 0
        assert sum(paid.values()) == 3 * 80 * MB
    # The books balance, no lot went below zero, the expired lots were swept.
    async with committed_conn.transaction():
        assert await service.check_books(committed_conn) == []
    cur = await committed_conn.execute(
        """SELECT min(l.remaining), count(*) FILTER (WHERE l.expires_at <= %s AND l.remaining > 0)
           FROM wallet_lots l JOIN ledger_accounts a USING (account_id)
           WHERE a.kind = 'user_wallet' AND a.owner = ANY(%s)""",
        (now, drivers),
    )
    lowest, unswept = await cur.fetchone() or (-1, -1)
    assert lowest >= 0
    assert unswept == 0


def _shuffled(count: int) -> list[int]:
    # A fixed interleaving of drivers and kinds of operation: the same run every time.
    return sorted(range(count), key=lambda i: (i * 7919) % count)


async def redeem(conn: psycopg.AsyncConnection, user: str, data_bytes: int) -> service.Spent:
    """What an exchange order takes from the wallet."""
    return await service.spend(
        conn, key=secrets.token_hex(8), user=user, data_bytes=data_bytes,
        to_kind=AccountKind.EXCHANGE, to_owner="catalogue", now=datetime.now(UTC),
    )  # fmt: skip


async def returned(conn: psycopg.AsyncConnection, spent: service.Spent) -> object:
    """An order returned: its data back to the lots it came from."""
    return await service.refund(
        conn, key=secrets.token_hex(8), spend_txn_id=spent.txn_id, data_bytes=spent.data_bytes,
        now=datetime.now(UTC),
    )  # fmt: skip


async def top_up(conn: psycopg.AsyncConnection, user: str, carrier_id: str) -> object:
    """A carrier top-up: its data reserved from the wallet."""
    return await withdrawals.request_top_up(
        conn, user=user, key=secrets.token_hex(8), now=datetime.now(UTC),
        body=TopUpRequest(carrier_id=carrier_id, phone="13912345678", package_mb=10),
    )  # fmt: skip
