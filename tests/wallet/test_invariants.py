"""Invariants of the wallet over random sequences of grants, spends, top-ups (whatever the carrier
answers), refunds and expiry sweeps, against the real database (each example rolled back)."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from uuid import UUID

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowbill.db import Connection
from flowbill.units import MB
from wallet import service, withdrawals
from wallet.errors import InsufficientBalance, RefundTooLarge
from wallet.gateways import GatewayResult, Outcome
from wallet.repository import carriers
from wallet.schemas import CarrierConfig, TopUpRequest
from wallet.service import AccountKind

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
PACKAGES = [10, 30, 50, 100]

operation = st.one_of(
    st.tuples(st.just("grant"), st.integers(1, 200 * MB), st.floats(0.5, 90)),
    st.tuples(st.just("exchange"), st.integers(1, 60 * MB)),
    st.tuples(st.just("top_up"), st.sampled_from(PACKAGES)),
    st.tuples(st.just("answer"), st.integers(0, 20), st.sampled_from(list(Outcome))),
    st.tuples(st.just("refund"), st.integers(0, 20), st.integers(1, 40 * MB)),
    st.tuples(st.just("advance"), st.floats(0.1, 30)),
    st.tuples(st.just("sweep")),
)


async def wallet_movements(conn: Connection, user: str) -> dict[str, int]:
    """The wallet's entries summed by the kind of transaction that made them."""
    cur = await conn.execute(
        """
        SELECT t.kind, sum(e.amount) FROM ledger_entries e
        JOIN ledger_transactions t USING (txn_id)
        JOIN ledger_accounts a USING (account_id)
        WHERE a.kind = 'user_wallet' AND a.owner = %s GROUP BY t.kind
        """,
        (user,),
    )
    return {str(kind): int(total) for kind, total in await cur.fetchall()}


async def spend_destinations(conn: Connection) -> set[str]:
    cur = await conn.execute(
        """
        SELECT DISTINCT a.kind FROM ledger_entries e
        JOIN ledger_transactions t USING (txn_id) JOIN ledger_accounts a USING (account_id)
        WHERE t.kind = 'spend' AND e.amount > 0
        """
    )
    return {str(kind) for (kind,) in await cur.fetchall()}


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(operation, min_size=1, max_size=30))
async def test_every_byte_is_granted_spent_withdrawn_exchanged_refunded_or_expired(
    conn: Connection,
    operations: list[tuple],  # type: ignore[type-arg]
) -> None:
    merchant, user = f"m-{secrets.token_hex(6)}", f"u-{secrets.token_hex(6)}"
    carrier = f"cm-{secrets.token_hex(4)}"
    await service.fund_pool(conn, key=secrets.token_hex(8), merchant=merchant,
                            data_bytes=2**40, price_minor=10**6, currency="CNY")  # fmt: skip
    await withdrawals.set_carrier(
        conn, carrier_id=carrier,
        config=CarrierConfig(name="carrier", package_mb=PACKAGES, min_package_mb=10),
    )  # fmt: skip
    now = NOW
    granted = exchanged = withdrawn = released = refunded = 0
    spends: list[service.Spent] = []
    top_ups: list[UUID] = []
    for op in operations:
        async with conn.transaction():  # a savepoint: a refused operation leaves no trace
            try:
                if op[0] == "grant":
                    await service.grant(
                        conn, key=secrets.token_hex(8), funder=merchant, user=user,
                        data_bytes=op[1], expires_at=now + timedelta(days=op[2]),
                        source="property", now=now,
                    )  # fmt: skip
                    granted += op[1]
                elif op[0] == "exchange":
                    spends.append(
                        await service.spend(
                            conn,
                            key=secrets.token_hex(8),
                            user=user,
                            data_bytes=op[1],
                            to_kind=AccountKind.EXCHANGE,
                            to_owner="catalogue",
                            now=now,
                        )
                    )
                    exchanged += op[1]
                elif op[0] == "top_up":
                    order, _ = await withdrawals.request_top_up(
                        conn, user=user, key=secrets.token_hex(8), now=now,
                        body=TopUpRequest(carrier_id=carrier, phone="13912345678",
                                          package_mb=op[1]),
                    )  # fmt: skip
                    top_ups.append(order.order_id)
                elif op[0] == "answer" and top_ups:
                    order_id = top_ups[op[1] % len(top_ups)]
                    before = await carriers.get_carrier_order(conn, order_id)
                    after = await withdrawals.settle(
                        conn, order_id=order_id, result=GatewayResult(op[2], reason="x"), now=now
                    )
                    assert before is not None
                    assert after is not None
                    if before.state not in withdrawals.SETTLED:
                        if after.state == "confirmed":
                            withdrawn += after.data_mb * MB
                        elif after.state == "failed":
                            released += after.data_mb * MB
                    else:
                        assert after == before  # a settled order never changes again
                elif op[0] == "refund" and spends:
                    target = spends[op[1] % len(spends)]
                    back = await service.refund(
                        conn, key=secrets.token_hex(8), spend_txn_id=target.txn_id,
                        data_bytes=op[2], now=now,
                    )  # fmt: skip
                    refunded += op[2]
                    assert sum(s.data_bytes for s in back.to_wallet + back.to_breakage) == op[2]
                elif op[0] == "advance":
                    now += timedelta(days=op[1])
                elif op[0] == "sweep":
                    await service.expire_lots(conn, now=now)
            except (InsufficientBalance, RefundTooLarge):
                pass
        # Each asset sums to zero, cached balances equal entries, wallets equal their lots.
        assert await service.check_books(conn) == []
        lots = await service.lots(conn, user=user)
        assert all(lot.remaining >= 0 for lot in lots)
        balance = await service.balance(conn, user=user)
        assert balance == sum(lot.remaining for lot in lots)
        moves = await wallet_movements(conn, user)
        # Only these ever move a wallet, and each adds up to what was done.
        assert set(moves) <= {"grant", "spend", "refund", "expiry"}
        assert moves.get("grant", 0) == granted
        reserved = sum(
            o.data_mb * MB
            for o in [await carriers.get_carrier_order(conn, i) for i in top_ups]
            if o is not None
        )
        assert -moves.get("spend", 0) == exchanged + reserved
        assert reserved >= withdrawn + released
        assert balance == sum(moves.values())
        # Refunds and releases give back at most what was asked (the rest, of lots that
        # expired meanwhile, goes to breakage); expiry only ever takes.
        assert 0 <= moves.get("refund", 0) <= refunded + released
        assert moves.get("expiry", 0) <= 0
    # platform_data: traffic the allocation run draws from wallets (billing/allocation/batches.py).
    assert await spend_destinations(conn) <= {"exchange", "in_flight", "carrier", "platform_data"}
