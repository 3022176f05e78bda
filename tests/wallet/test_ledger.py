"""The wallet ledger against the real database: examples, invariants, concurrency."""

from __future__ import annotations

import asyncio
import secrets
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowbill import db
from flowbill.db import Connection
from flowbill.settings import Settings
from flowbill.units import MB
from wallet import service
from wallet.errors import (
    IdempotencyKeyReused,
    InsufficientBalance,
    InvalidAmount,
    RefundTooLarge,
)
from wallet.service import AccountKind

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def name(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(6)}"


async def funded_merchant(conn: Connection, data_bytes: int = 10_000 * MB) -> str:
    merchant = name("merchant")
    await service.fund_pool(
        conn, key=name("fund"), merchant=merchant, data_bytes=data_bytes, price_minor=60_000,
        currency="CNY",
    )  # fmt: skip
    return merchant


async def give(
    conn: Connection, merchant: str, user: str, data_bytes: int, days: float
) -> service.Granted:
    return await service.grant(
        conn, key=name("grant"), funder=merchant, user=user, data_bytes=data_bytes,
        expires_at=NOW + timedelta(days=days), source="campaign:favourite-shop", now=NOW,
    )  # fmt: skip


async def spend(
    conn: Connection, user: str, data_bytes: int, key: str | None = None
) -> service.Spent:
    return await service.spend(
        conn, key=key or name("spend"), user=user, data_bytes=data_bytes,
        to_kind=AccountKind.CARRIER, to_owner="china-mobile-gd", now=NOW,
    )  # fmt: skip


async def test_spending_takes_the_earliest_expiring_lots_first(conn: Connection) -> None:
    merchant = await funded_merchant(conn)
    user = name("user")
    late = await give(conn, merchant, user, 50 * MB, days=300)
    soon = await give(conn, merchant, user, 30 * MB, days=10)
    soonest = await give(conn, merchant, user, 10 * MB, days=1)
    spent = await spend(conn, user, 35 * MB)
    assert spent.lots == (
        service.LotShare(soonest.lot_id, 10 * MB),
        service.LotShare(soon.lot_id, 25 * MB),
    )
    assert await service.balance(conn, user=user) == 55 * MB
    remaining = {lot.lot_id: lot.remaining for lot in await service.lots(conn, user=user)}
    assert remaining == {soon.lot_id: 5 * MB, late.lot_id: 50 * MB}
    assert await service.check_books(conn) == []


async def test_not_enough_data_changes_nothing(conn: Connection) -> None:
    merchant = await funded_merchant(conn)
    user = name("user")
    await give(conn, merchant, user, 10 * MB, days=5)
    with pytest.raises(InsufficientBalance):
        async with conn.transaction():  # the request's transaction, rolled back
            await spend(conn, user, 10 * MB + 1)
    assert await service.balance(conn, user=user) == 10 * MB


async def test_expired_lots_cannot_be_spent_and_are_swept_to_breakage(conn: Connection) -> None:
    merchant = await funded_merchant(conn)
    user = name("user")
    await give(conn, merchant, user, 10 * MB, days=1)
    later = NOW + timedelta(days=2)
    with pytest.raises(InsufficientBalance):
        await service.spend(
            conn, key=name("k"), user=user, data_bytes=1, to_kind=AccountKind.EXCHANGE,
            to_owner="catalogue", now=later,
        )  # fmt: skip
    assert await service.expire_lots(conn, now=later) >= 1
    assert await service.balance(conn, user=user) == 0
    assert await service.expire_lots(conn, now=later) == 0  # idempotent
    assert await service.check_books(conn) == []


async def test_a_repeated_key_returns_the_first_result_and_another_request_is_refused(
    conn: Connection,
) -> None:
    merchant = await funded_merchant(conn)
    user = name("user")
    await give(conn, merchant, user, 100 * MB, days=30)
    first = await spend(conn, user, 10 * MB, key="redeem-1-" + user)
    again = await spend(conn, user, 10 * MB, key="redeem-1-" + user)
    assert again == first
    assert await service.balance(conn, user=user) == 90 * MB
    with pytest.raises(IdempotencyKeyReused):
        await spend(conn, user, 11 * MB, key="redeem-1-" + user)


async def test_many_spends_at_once_take_what_spends_one_by_one_take(conn: Connection) -> None:
    """spend_many (the allocation run's draws) takes the same lots with the same keys and
    digests as `spend` one by one; a repeat answers the first result; one wallet short rolls
    the whole batch back with the caller's transaction."""
    merchant = await funded_merchant(conn)
    users = [name("user") for _ in range(4)]
    soonest = []
    for n, user in enumerate(users):
        await give(conn, merchant, user, (n + 1) * 10 * MB, days=300)
        soonest.append((await give(conn, merchant, user, 5 * MB, days=3 + n)).lot_id)
    draws = [
        service.Draw(key=name("draw"), user=user, data_bytes=(n + 1) * 7 * MB, memo={"n": n})
        for n, user in enumerate(users)
    ]
    spent = await service.spend_many(
        conn, draws, to_kind=AccountKind.CARRIER, to_owner="china-mobile-gd", now=NOW
    )
    for n, (draw, result) in enumerate(zip(draws, spent, strict=True)):
        assert result.data_bytes == draw.data_bytes
        assert result.lots[0] == service.LotShare(soonest[n], 5 * MB)
        assert sum(share.data_bytes for share in result.lots) == draw.data_bytes
        assert await service.balance(conn, user=draw.user) == (n + 1) * 3 * MB + 5 * MB
        # The same key through `spend` is the same request: it answers the first result.
        assert await spend(conn, draw.user, draw.data_bytes, key=draw.key) == result
    again = await service.spend_many(
        conn, list(reversed(draws)), to_kind=AccountKind.CARRIER, to_owner="china-mobile-gd",
        now=NOW,
    )  # fmt: skip
    assert again == list(reversed(spent))
    with pytest.raises(IdempotencyKeyReused):
        await service.spend_many(
            conn, [service.Draw(key=draws[0].key, user=users[0], data_bytes=1, memo={})],
            to_kind=AccountKind.CARRIER, to_owner="china-mobile-gd", now=NOW,
        )  # fmt: skip
    short = [
        service.Draw(key=name("draw"), user=users[0], data_bytes=MB, memo={}),
        service.Draw(key=name("draw"), user=users[1], data_bytes=100 * MB, memo={}),
    ]
    before = [await service.balance(conn, user=user) for user in users]
    with pytest.raises(InsufficientBalance):
        async with conn.transaction():
            await service.spend_many(
                conn, short, to_kind=AccountKind.CARRIER, to_owner="china-mobile-gd", now=NOW
            )
    assert [await service.balance(conn, user=user) for user in users] == before
    assert await service.check_books(conn) == []


async def test_refunds_return_to_the_original_lots_or_to_breakage(conn: Connection) -> None:
    merchant = await funded_merchant(conn)
    user = name("user")
    short = await give(conn, merchant, user, 10 * MB, days=1)
    long = await give(conn, merchant, user, 40 * MB, days=100)
    spent = await spend(conn, user, 30 * MB)  # 10 from `short`, 20 from `long`
    partial = await service.refund(
        conn, key=name("r"), spend_txn_id=spent.txn_id, data_bytes=5 * MB, now=NOW
    )
    assert partial.to_wallet == (service.LotShare(long.lot_id, 5 * MB),)
    # Two days on, `short` has expired: its share of the refund is breakage.
    later = NOW + timedelta(days=2)
    rest = await service.refund(
        conn, key=name("r"), spend_txn_id=spent.txn_id, data_bytes=25 * MB, now=later
    )
    assert rest.to_wallet == (service.LotShare(long.lot_id, 15 * MB),)
    assert rest.to_breakage == (service.LotShare(short.lot_id, 10 * MB),)
    with pytest.raises(RefundTooLarge):
        await service.refund(
            conn, key=name("r"), spend_txn_id=spent.txn_id, data_bytes=1, now=later
        )
    remaining = {lot.lot_id: lot.remaining for lot in await service.lots(conn, user=user)}
    assert remaining == {long.lot_id: 40 * MB}
    assert await service.check_books(conn) == []


@pytest.mark.parametrize("amount", [0, -1, 2**51, 1.5, True])
async def test_bad_amounts_are_refused(conn: Connection, amount: object) -> None:
    with pytest.raises(InvalidAmount):
        await spend(conn, name("user"), amount)  # type: ignore[arg-type]


async def test_a_grant_needs_a_funded_pool(conn: Connection) -> None:
    with pytest.raises(InsufficientBalance):
        await give(conn, name("unfunded"), name("user"), MB, days=1)


operation = st.one_of(
    st.tuples(st.just("grant"), st.integers(1, 50 * MB), st.floats(0.5, 60)),
    st.tuples(st.just("spend"), st.integers(1, 80 * MB)),
    st.tuples(st.just("refund"), st.integers(0, 30), st.integers(1, 40 * MB)),
    st.tuples(st.just("advance"), st.floats(0.1, 20)),
    st.tuples(st.just("sweep")),
)


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(operation, min_size=1, max_size=25))
async def test_invariants_hold_over_any_sequence(conn: Connection, operations: list[tuple]) -> None:  # type: ignore[type-arg]
    """Granted = in wallet + spent - refunded + expired; books always balance."""
    merchant = await funded_merchant(conn, data_bytes=2**40)
    user = name("user")
    now = NOW
    granted = spent = refunded_to_wallet = refunded_to_breakage = 0
    spends: list[service.Spent] = []
    for op in operations:
        async with conn.transaction():  # a savepoint: a refused operation leaves no trace
            try:
                if op[0] == "grant":
                    await service.grant(
                        conn, key=name("g"), funder=merchant, user=user, data_bytes=op[1],
                        expires_at=now + timedelta(days=op[2]), source="prop", now=now,
                    )  # fmt: skip
                    granted += op[1]
                elif op[0] == "spend":
                    result = await service.spend(
                        conn, key=name("s"), user=user, data_bytes=op[1],
                        to_kind=AccountKind.EXCHANGE, to_owner="catalogue", now=now,
                    )  # fmt: skip
                    spends.append(result)
                    spent += op[1]
                elif op[0] == "refund" and spends:
                    target = spends[op[1] % len(spends)]
                    back = await service.refund(
                        conn, key=name("r"), spend_txn_id=target.txn_id, data_bytes=op[2], now=now
                    )
                    refunded_to_wallet += sum(s.data_bytes for s in back.to_wallet)
                    refunded_to_breakage += sum(s.data_bytes for s in back.to_breakage)
                elif op[0] == "advance":
                    now += timedelta(days=op[1])
                elif op[0] == "sweep":
                    await service.expire_lots(conn, now=now)
            except (InsufficientBalance, RefundTooLarge):
                pass
        lots = await service.lots(conn, user=user)
        assert all(lot.remaining >= 0 for lot in lots)
        wallet = await service.balance(conn, user=user)
        assert wallet == sum(lot.remaining for lot in lots)
        assert 0 <= wallet <= granted - spent + refunded_to_wallet
    assert await service.check_books(conn) == []


async def _spend_in_own_transaction(settings: Settings, user: str, amount: int) -> bool:
    conn = await db.connect(settings, application_name="flowbill-test")
    try:
        async with conn.transaction():
            await spend(conn, user, amount)
        return True
    except InsufficientBalance:
        return False
    finally:
        await conn.close()


async def test_fifty_concurrent_redemptions_never_overspend(settings: Settings) -> None:
    user = name("user")
    setup = await db.connect(settings, application_name="flowbill-test")
    try:
        async with setup.transaction():
            merchant = await funded_merchant(setup)
            await give(setup, merchant, user, 20 * MB, days=30)
    finally:
        await setup.close()
    results = await asyncio.gather(
        *(_spend_in_own_transaction(settings, user, MB) for _ in range(50))
    )
    assert results.count(True) == 20
    check = await db.connect(settings, application_name="flowbill-test")
    try:
        assert await service.balance(check, user=user) == 0
        assert await service.check_books(check) == []
    finally:
        await check.close()


async def test_one_grant_delivered_twenty_times_at_once_grants_once(settings: Settings) -> None:
    user = name("user")
    key = name("event")
    setup = await db.connect(settings, application_name="flowbill-test")
    try:
        async with setup.transaction():
            merchant = await funded_merchant(setup)
    finally:
        await setup.close()

    async def deliver() -> int:
        conn = await db.connect(settings, application_name="flowbill-test")
        try:
            async with conn.transaction():
                granted = await service.grant(
                    conn, key=key, funder=merchant, user=user, data_bytes=5 * MB,
                    expires_at=NOW + timedelta(days=30), source="event", now=NOW,
                )  # fmt: skip
            return granted.lot_id
        finally:
            await conn.close()

    lot_ids = await asyncio.gather(*(deliver() for _ in range(20)))
    assert len(set(lot_ids)) == 1
    check = await db.connect(settings, application_name="flowbill-test")
    try:
        assert await service.balance(check, user=user) == 5 * MB
    finally:
        await check.close()


async def test_concurrent_first_grants_to_a_new_user_all_land(settings: Settings) -> None:
    """Ten merchants (ten pool locks) credit one new user at once: one wallet is created."""
    user = name("user")
    setup = await db.connect(settings, application_name="flowbill-test")
    try:
        async with setup.transaction():
            merchants = [await funded_merchant(setup) for _ in range(10)]
    finally:
        await setup.close()

    async def deliver(merchant: str) -> None:
        conn = await db.connect(settings, application_name="flowbill-test")
        try:
            async with conn.transaction():
                await give(conn, merchant, user, MB, days=30)
        finally:
            await conn.close()

    await asyncio.gather(*(deliver(m) for m in merchants))
    check = await db.connect(settings, application_name="flowbill-test")
    try:
        assert await service.balance(check, user=user) == 10 * MB
        assert len(await service.lots(check, user=user)) == 10
    finally:
        await check.close()
