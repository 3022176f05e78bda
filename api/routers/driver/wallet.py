"""Drivers and card holders: their wallet's balance, lots with expiry dates and history; top-ups
of a phone number, transfers-in of in-plan data, and the exchange catalogue."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, BackgroundTasks, Query, status
from psycopg_pool import AsyncConnectionPool

from api.deps import (
    CalendarDep,
    ConnDep,
    DriverCaller,
    DriverCallerWithoutTransaction,
    GatewaysDep,
    IdempotencyKey,
    PoolDep,
    SettingsDep,
    after_response,
    callback_url,
    ledger_key,
    providers,
    statement_connection,
)
from api.params import Cursor, Limit
from flowbill.db import Connection
from flowbill.paging import DEFAULT_LIMIT, Page
from flowbill.settings import Settings
from wallet import exchange, reports, withdrawals
from wallet.gateways import HttpGateways
from wallet.schemas import (
    BalancePublic,
    CarrierOrderPublic,
    CarrierPublic,
    CatalogueItemPublic,
    ConsentConfirmation,
    ExchangeOrderPublic,
    ExchangeOrderRequest,
    HistoryEntry,
    LotPublic,
    ReturnRequest,
    TopUpRequest,
    TransferInRequest,
)

router = APIRouter(prefix="/v1/wallet", tags=["wallet"])


@router.get("")
async def balance(conn: ConnDep, caller: DriverCaller) -> BalancePublic:
    """Your spendable data, what expires within 30 days, and when the next lot expires."""
    return await reports.balance(conn, user=str(caller.tenant_id), now=datetime.now(UTC))


@router.get("/lots")
async def lots(
    conn: ConnDep,
    calendar: CalendarDep,
    caller: DriverCaller,
    expiring_within_days: Annotated[int | None, Query(ge=1, le=730)] = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Page[LotPublic]:
    """Your lots of data, earliest expiry first ("50 MB expire on 31 Dec")."""
    within = None if expiring_within_days is None else timedelta(days=expiring_within_days)
    return await reports.lots(
        conn, user=str(caller.tenant_id), now=datetime.now(UTC), within=within,
        calendar=calendar, limit=limit, cursor=cursor,
    )  # fmt: skip


@router.get("/history")
async def history(
    conn: ConnDep, caller: DriverCaller, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> Page[HistoryEntry]:
    """Every grant, check-in, top-up, exchange, refund and expiry of your wallet, newest first."""
    return await reports.history(conn, user=str(caller.tenant_id), limit=limit, cursor=cursor)


@router.get("/carriers")
async def carriers(
    conn: ConnDep, _: DriverCaller, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> Page[CarrierPublic]:
    """Carriers, the data packages they sell and their minimum top-up."""
    return await withdrawals.carriers(conn, limit=limit, cursor=cursor)


def _submit_after_response(
    background: BackgroundTasks,
    pool: AsyncConnectionPool[Connection],
    gateways: HttpGateways,
    settings: Settings,
    order: CarrierOrderPublic,
    phone: str | None,
) -> None:
    # After the response, so after the commit: the carrier only hears of committed orders.
    background.add_task(
        after_response,
        withdrawals.submit(
            pool,
            gateways,
            order_id=order.order_id,
            msisdn=phone,
            callback_url=callback_url(settings),
            now=datetime.now(UTC),
        ),
        what="carrier submission",
    )


@router.post("/top-ups", status_code=status.HTTP_202_ACCEPTED)
async def top_up(
    conn: ConnDep,
    pool: PoolDep,
    gateways: GatewaysDep,
    settings: SettingsDep,
    caller: DriverCaller,
    key: IdempotencyKey,
    body: TopUpRequest,
    background: BackgroundTasks,
) -> CarrierOrderPublic:
    """Turn wallet data into a standard package on a phone number.

    The data is reserved at once (202, `reserved`); the carrier then confirms (`confirmed`)
    or fails (`failed`: the data is back in your lots). Poll the order to see which.
    """
    order, new = await withdrawals.request_top_up(
        conn, user=str(caller.tenant_id), key=key, body=body, now=datetime.now(UTC)
    )
    if new:
        _submit_after_response(background, pool, gateways, settings, order, body.phone)
    return order


@router.post("/transfers-in", status_code=status.HTTP_202_ACCEPTED)
async def transfer_in(
    conn: ConnDep,
    pool: PoolDep,
    gateways: GatewaysDep,
    settings: SettingsDep,
    caller: DriverCaller,
    key: IdempotencyKey,
    body: TransferInRequest,
    background: BackgroundTasks,
) -> CarrierOrderPublic:
    """Move unused in-plan data from your carrier into the wallet, with the carrier's validity.

    Step one of two: the order waits for the line's consent (202, `awaiting_consent`) and the
    carrier texts a one-time code to the phone. Confirm with it within five minutes
    (`POST /v1/wallet/transfers-in/{order_id}/confirmation`); nothing moves before that.
    """
    order, new = await withdrawals.request_transfer_in(
        conn, user=str(caller.tenant_id), key=key, body=body, now=datetime.now(UTC)
    )
    if new:
        # After the response, so after the commit; the number is passed on, never stored.
        background.add_task(
            after_response,
            withdrawals.request_consent(
                pool, gateways, order_id=order.order_id, msisdn=body.phone, now=datetime.now(UTC)
            ),
            what="carrier consent code",
        )
    return order


@router.post("/transfers-in/{order_id}/confirmation", status_code=status.HTTP_202_ACCEPTED)
async def confirm_transfer_in(
    pool: PoolDep,
    gateways: GatewaysDep,
    settings: SettingsDep,
    caller: DriverCallerWithoutTransaction,
    order_id: UUID,
    body: ConsentConfirmation,
    background: BackgroundTasks,
) -> CarrierOrderPublic:
    """Consent to a transfer-in with the one-time code the carrier texted to the phone.

    The right code moves the order on (202, `reserved`, then `submitted` and `confirmed`; the
    wallet is credited what you asked for, or less if the carrier moved less). A wrong code
    answers 422 `consent-code-wrong` with `tries_left`; the fifth wrong one, or a code older
    than five minutes, fails the order (409 `consent-failed` / `consent-expired`). Repeating
    a confirmation that went through answers the order again: the order id keys it.
    """
    order, consented = await withdrawals.confirm_transfer_in(
        pool, gateways, user=str(caller.tenant_id), order_id=order_id, code=body.code,
        now=datetime.now(UTC),
    )  # fmt: skip
    if consented:
        _submit_after_response(background, pool, gateways, settings, order, None)
    return order


@router.get("/carrier-orders")
async def carrier_orders(
    conn: ConnDep, caller: DriverCaller, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> Page[CarrierOrderPublic]:
    """Your top-ups and transfers-in, newest first."""
    return await withdrawals.orders(conn, user=str(caller.tenant_id), limit=limit, cursor=cursor)


@router.get("/carrier-orders/{order_id}")
async def carrier_order(conn: ConnDep, caller: DriverCaller, order_id: UUID) -> CarrierOrderPublic:
    """One of your top-ups or transfers-in."""
    return await withdrawals.get_order(conn, user=str(caller.tenant_id), order_id=order_id)


@router.get("/catalogue")
async def catalogue(
    conn: ConnDep, _: DriverCaller, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> Page[CatalogueItemPublic]:
    """What wallet data can be exchanged for, by kind and name."""
    return await exchange.catalogue(conn, limit=limit, cursor=cursor)


@router.post("/exchange-orders", status_code=status.HTTP_202_ACCEPTED)
async def place_order(
    pool: PoolDep,
    gateways: GatewaysDep,
    settings: SettingsDep,
    caller: DriverCallerWithoutTransaction,
    key: IdempotencyKey,
    body: ExchangeOrderRequest,
    background: BackgroundTasks,
) -> ExchangeOrderPublic:
    """Redeem wallet data (plus the item's money part, if any) for a catalogue item.

    The data and stock are taken at once; payment and delivery follow. An order moves
    placed → paid → fulfilled, or failed → refunded (data back to your lots).
    """
    # Placing an order is one SQL statement (migrations/0012), so it is its own transaction:
    # committed before the answer, in one round trip to the database.
    async with statement_connection(pool) as conn:
        order, to_process = await exchange.place_order(
            conn, user=str(caller.tenant_id), key=ledger_key(caller, "exchange", key),
            body=body, now=datetime.now(UTC),
        )  # fmt: skip
    if to_process:
        background.add_task(
            after_response,
            exchange.process(
                pool, providers(settings, gateways), order_id=order.order_id, now=datetime.now(UTC)
            ),
            what="exchange order",
        )
    return order


@router.get("/exchange-orders")
async def exchange_orders(
    conn: ConnDep, caller: DriverCaller, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> Page[ExchangeOrderPublic]:
    """Your exchange orders, newest first."""
    return await exchange.orders(conn, user=str(caller.tenant_id), limit=limit, cursor=cursor)


@router.get("/exchange-orders/{order_id}")
async def exchange_order(
    conn: ConnDep, caller: DriverCaller, order_id: UUID
) -> ExchangeOrderPublic:
    """One of your exchange orders, with every state it went through."""
    return await exchange.get_order(conn, order_id=order_id, user=str(caller.tenant_id))


@router.post("/exchange-orders/{order_id}/returns")
async def return_order(
    conn: ConnDep,
    pool: PoolDep,
    gateways: GatewaysDep,
    settings: SettingsDep,
    caller: DriverCaller,
    key: IdempotencyKey,
    order_id: UUID,
    body: ReturnRequest,
    background: BackgroundTasks,
) -> ExchangeOrderPublic:
    """Return part or all of an order: the data goes back to the lots it came from (with
    their expiry), the money part is refunded."""
    order, returned = await exchange.request_return(
        conn, user=str(caller.tenant_id), order_id=order_id,
        key=ledger_key(caller, "return", key), body=body, now=datetime.now(UTC),
    )  # fmt: skip
    if returned is not None and returned.money_state == "pending":
        background.add_task(
            after_response,
            exchange.refund_money(pool, providers(settings, gateways), order_id=order_id),
            what="exchange refund",
        )
    return order
