"""The exchange: users redeem wallet MB (plus an optional money part) for catalogue items.

An order moves placed → paid → fulfilled, or failed → refunded. Placing it takes the stock and
the data (wallet → in flight, from the earliest-expiring lots) in the request's transaction.
The money part goes through the payment provider and platform goods through the fulfilment
provider, both under the order id as their idempotency key, after the order is committed;
merchants fulfil their own goods. Delivery moves the data from in flight to the exchange.
A failure returns everything: data to the lots it came from (breakage if they expired since),
stock, and the money part. Returns, whole or partial, do the same for part of an order.

Talking to the providers happens outside the request's transaction, so `process` and
`reconcile` take the pool and own short transactions, like the carrier's.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from uuid import UUID

from psycopg_pool import AsyncConnectionPool

from flowbill import metrics, paging
from flowbill.db import Connection
from flowbill.paging import Page
from tenants import service as tenants
from tenants.schemas import Role
from wallet import service
from wallet.errors import (
    CarrierNotFound,
    CarrierRequired,
    IdempotencyKeyReused,
    InsufficientBalance,
    InvalidAmount,
    ItemLimitReached,
    ItemNotFound,
    NotReturnable,
    OrderNotFound,
    OutOfStock,
    RefundTooLarge,
)
from wallet.gateways import FulfilmentGateway, GatewayResult, Outcome, PaymentGateway
from wallet.repository import exchange as repository
from wallet.repository.exchange import EventRow, ExchangeOrderRow, ItemRow, ReturnRow
from wallet.schemas import (
    CatalogueItemCreate,
    CatalogueItemPublic,
    CatalogueItemUpdate,
    ExchangeOrderPublic,
    ExchangeOrderRequest,
    ItemKind,
    OrderEvent,
    ReconcileReport,
    ReturnRequest,
)
from wallet.service import DATA, MAX_AMOUNT, PLATFORM, AccountKind

log = logging.getLogger(__name__)

IN_FLIGHT_OWNER = "exchange"
FINAL = frozenset({"fulfilled", "failed", "refunded"})


async def add_item(conn: Connection, spec: CatalogueItemCreate) -> CatalogueItemPublic:
    """Put an item in the catalogue."""
    if spec.merchant_id is not None and not await tenants.has_role(
        conn, spec.merchant_id, Role.MERCHANT
    ):
        raise ItemNotFound(f"no merchant {spec.merchant_id}")
    row = await repository.insert_item(conn, **spec.model_dump(mode="json"))
    return CatalogueItemPublic.model_validate(row)


async def change_item(
    conn: Connection, *, item_id: UUID, change: CatalogueItemUpdate
) -> CatalogueItemPublic:
    """Restock, make unlimited, withdraw or re-list an item."""
    row = await repository.update_item(
        conn, item_id, stock=None if change.unlimited_stock else change.stock,
        set_stock=change.unlimited_stock or change.stock is not None, active=change.active,
    )  # fmt: skip
    if row is None:
        raise ItemNotFound(f"no item {item_id}")
    return CatalogueItemPublic.model_validate(row)


async def catalogue(
    conn: Connection, *, limit: int, cursor: str | None, active_only: bool = True
) -> Page[CatalogueItemPublic]:
    """Catalogue items by kind and name (only those on offer, unless `active_only` is off)."""
    after = (
        None if cursor is None
        else paging.decode_cursor(cursor, (str, str, UUID), scope="catalogue")
    )  # fmt: skip
    rows = await repository.list_items(conn, active_only=active_only, after=after, limit=limit + 1)
    return paging.page(
        [CatalogueItemPublic.model_validate(row) for row in rows],
        limit=limit, key=lambda item: (item.kind, item.name, item.item_id), scope="catalogue",
    )  # fmt: skip


async def item(conn: Connection, item_id: UUID) -> CatalogueItemPublic:
    """One catalogue item, withdrawn or not."""
    row = await repository.get_item(conn, item_id)
    if row is None:
        raise ItemNotFound(f"no item {item_id}")
    return CatalogueItemPublic.model_validate(row)


async def _public(
    conn: Connection, order: ExchangeOrderRow, *, events: list[EventRow] | None = None
) -> ExchangeOrderPublic:
    if events is None:
        events = await repository.order_events(conn, order.order_id)
    public = ExchangeOrderPublic.model_validate(order)
    public.events = [OrderEvent.model_validate(event) for event in events]
    return public


async def _fresh(conn: Connection, order_id: UUID) -> ExchangeOrderRow:
    order = await repository.get_exchange_order(conn, order_id)
    assert order is not None
    return order


async def place_order(
    conn: Connection, *, user: str, key: str, body: ExchangeOrderRequest, now: datetime
) -> tuple[ExchangeOrderPublic, bool]:
    """Take stock and data for an order; returns it and whether a new order now needs the
    providers (a money part to charge, or goods a provider delivers) through `process`.

    One statement (migrations/0012), so it may run in a transaction of the caller's or as
    its own (autocommit): the wallet's lock serialises this user's orders, so the per-user
    limit and the balance hold; a repeat of the key returns the first order; a refusal
    leaves nothing written.
    """
    placed = await repository.place_exchange_order(
        conn, user_id=user, key=key, item_id=body.item_id, quantity=body.quantity,
        carrier_id=body.carrier_id, now=now,
    )  # fmt: skip
    name = placed.item_name
    match placed.outcome:
        case "placed" | "existing" if placed.order is not None:
            order = placed.order
        case "no_item":
            raise ItemNotFound(f"no item {body.item_id} in the catalogue")
        case "carrier_required":
            raise CarrierRequired(f"{name} is priced per carrier", carriers=placed.item_carriers)
        case "unknown_carrier":
            raise CarrierNotFound(f"no carrier {body.carrier_id!r}")
        case "key_reused":
            raise IdempotencyKeyReused("this Idempotency-Key was used for another order")
        case "invalid_amount":
            raise InvalidAmount(f"an order may take at most {MAX_AMOUNT} bytes")
        case "no_wallet":
            raise InsufficientBalance("the wallet is empty")
        case "limit_reached":
            raise ItemLimitReached(
                f"one person may hold {placed.item_limit} of {name}; you have {placed.held_units}"
            )
        case "insufficient":
            raise InsufficientBalance("the wallet holds less unexpired data than asked")
        case "out_of_stock":
            raise OutOfStock(f"fewer than {body.quantity} of {name} are left")
        case unexpected:
            raise RuntimeError(f"wallet_place_order answered {unexpected!r}")
    needs_providers = placed.outcome == "placed" and (
        order.unit_minor > 0 or placed.item_kind != ItemKind.MERCHANT_GOODS.value
    )
    return await _public(conn, order, events=placed.events), needs_providers


async def get_order(
    conn: Connection, *, order_id: UUID, user: str | None = None, merchant_id: UUID | None = None
) -> ExchangeOrderPublic:
    """An order, seen by its user or by the merchant who sells its item."""
    order = await repository.get_exchange_order(conn, order_id)
    if order is not None and user is not None and order.user_id != user:
        order = None
    if order is not None and merchant_id is not None:
        item = await repository.get_item(conn, order.item_id)
        if item is None or item.merchant_id != merchant_id:
            order = None
    if order is None:
        raise OrderNotFound(f"no exchange order {order_id}")
    return await _public(conn, order)


async def orders(
    conn: Connection, *, user: str | None = None, merchant_id: UUID | None = None, limit: int,
    cursor: str | None,
) -> Page[ExchangeOrderPublic]:  # fmt: skip
    """A user's orders, or the orders of a merchant's goods, newest first."""
    after = (
        None if cursor is None
        else paging.decode_cursor(cursor, (datetime, UUID), scope="exchange-orders")
    )  # fmt: skip
    rows = await repository.exchange_orders_of(
        conn, user_id=user, merchant_id=merchant_id, after=after, limit=limit + 1
    )
    found = paging.page(
        rows, limit=limit, key=lambda o: (o.created_at, o.order_id), scope="exchange-orders"
    )
    return Page[ExchangeOrderPublic](
        items=[await _public(conn, row) for row in found.items], next_cursor=found.next_cursor
    )


def _seller(item: ItemRow) -> tuple[AccountKind, str]:
    if item.merchant_id is not None:
        return AccountKind.MERCHANT_PAYMENTS, str(item.merchant_id)
    return AccountKind.PLATFORM_REVENUE, PLATFORM


async def settle_payment(
    conn: Connection, *, order_id: UUID, result: GatewayResult, now: datetime
) -> None:
    """Record the payment provider's answer for an order's money part (at most once)."""
    order = await repository.get_exchange_order(conn, order_id, lock=True)
    if order is None or order.payment_state != "pending" or order.state != "placed":
        return
    if result.outcome is Outcome.CONFIRMED:
        item = await repository.get_item(conn, order.item_id)
        assert item is not None
        txn_id = await service.move(
            conn, key=f"exchange-order:{order_id}:payment", kind="exchange_payment",
            source=(AccountKind.USER_PAYMENTS, order.user_id), destination=_seller(item),
            asset=order.currency, amount=order.unit_minor * order.quantity,
            memo={"exchange_order": str(order_id)},
        )  # fmt: skip
        await repository.update_exchange_order(
            conn, order_id, payment_state="captured", payment_txn_id=txn_id, state="paid"
        )
        await repository.add_order_event(conn, order_id, "paid", result.reference)
    elif result.outcome is Outcome.FAILED:
        await repository.update_exchange_order(conn, order_id, payment_state="failed")
        await _fail(conn, order, f"payment {result.reason or 'failed'}", now)
    else:
        await repository.update_exchange_order(conn, order_id, payment_state="pending")


async def settle_fulfilment(
    conn: Connection, *, order_id: UUID, result: GatewayResult, now: datetime
) -> None:
    """Record the delivery (or not) of a paid order (at most once)."""
    order = await repository.get_exchange_order(conn, order_id, lock=True)
    if order is None or order.state != "paid":
        return
    if result.outcome is Outcome.CONFIRMED:
        unreturned = (order.quantity - order.returned_quantity) * order.unit_bytes
        if unreturned:
            await service.move(
                conn, key=f"exchange-order:{order_id}:delivered", kind="exchange_delivered",
                source=(AccountKind.IN_FLIGHT, IN_FLIGHT_OWNER),
                destination=(AccountKind.EXCHANGE, str(order.item_id)), asset=DATA,
                amount=unreturned, memo={"exchange_order": str(order_id)},
            )  # fmt: skip
        voucher = result.detail.get("voucher")
        await repository.update_exchange_order(
            conn, order_id, state="fulfilled", fulfilment_state="delivered",
            voucher=voucher if isinstance(voucher, str) else result.reference,
        )  # fmt: skip
        await repository.add_order_event(conn, order_id, "fulfilled", None)
        metrics.WALLET_ORDERS_SETTLED.labels("exchange", "fulfilled").inc()
    elif result.outcome is Outcome.FAILED:
        await repository.update_exchange_order(conn, order_id, fulfilment_state="failed")
        await _fail(conn, order, f"fulfilment {result.reason or 'failed'}", now)
    else:
        await repository.update_exchange_order(conn, order_id, fulfilment_state="pending")


async def _fail(conn: Connection, order: ExchangeOrderRow, reason: str, now: datetime) -> None:
    """Fail an order and return what is not yet returned: data, stock, money part."""
    await repository.update_exchange_order(conn, order.order_id, state="failed", reason=reason)
    metrics.WALLET_ORDERS_SETTLED.labels("exchange", "failed").inc()
    await repository.add_order_event(conn, order.order_id, "failed", reason)
    left = order.quantity - order.returned_quantity
    if left > 0:
        await _return(conn, order, quantity=left, key=f"exchange-order:{order.order_id}:failed",
                      now=now)  # fmt: skip
    if not any(
        r.money_state == "pending" for r in await repository.returns_of(conn, order.order_id)
    ):
        await repository.update_exchange_order(conn, order.order_id, state="refunded")
        await repository.add_order_event(conn, order.order_id, "refunded", None)


async def _return(
    conn: Connection, order: ExchangeOrderRow, *, quantity: int, key: str, now: datetime
) -> ReturnRow:
    assert order.spend_txn_id is not None
    delivered = order.fulfilment_state == "delivered"
    refunded = await service.refund(
        conn, key=f"{key}:data", spend_txn_id=order.spend_txn_id,
        data_bytes=quantity * order.unit_bytes, now=now,
        take_from=(AccountKind.EXCHANGE, str(order.item_id)) if delivered else None,
    )  # fmt: skip
    await repository.restock(conn, order.item_id, quantity)
    money = quantity * order.unit_minor if order.payment_state == "captured" else 0
    returned = await repository.insert_return(
        conn, order_id=order.order_id, key=key, quantity=quantity, data_txn_id=refunded.txn_id,
        money_minor=money,
    )  # fmt: skip
    await repository.update_exchange_order(
        conn, order.order_id, returned_quantity=order.returned_quantity + quantity
    )
    return returned


async def request_return(
    conn: Connection, *, user: str, order_id: UUID, key: str, body: ReturnRequest, now: datetime
) -> tuple[ExchangeOrderPublic, ReturnRow | None]:
    """Return part or all of an order: data back to its lots, the money part to be refunded.

    Merchant goods can be returned while paid or after delivery; platform goods (vouchers,
    credit, memberships) only before they are delivered.
    """
    existing = await repository.find_return(conn, key)
    if existing is not None:
        if existing.order_id != order_id or existing.quantity != body.quantity:
            raise IdempotencyKeyReused("this Idempotency-Key was used for another return")
        return await get_order(conn, order_id=order_id, user=user), existing
    order = await repository.get_exchange_order(conn, order_id, lock=True)
    if order is None or order.user_id != user:
        raise OrderNotFound(f"no exchange order {order_id}")
    item = await repository.get_item(conn, order.item_id)
    assert item is not None
    if order.state not in {"paid", "fulfilled"}:
        raise NotReturnable(f"an order that is {order.state} cannot be returned")
    if order.state == "fulfilled" and item.kind != ItemKind.MERCHANT_GOODS.value:
        raise NotReturnable(f"{item.name} was delivered and cannot be returned")
    if order.state == "paid" and order.fulfilment_state == "pending":
        raise NotReturnable("the provider is delivering this order; try again once it settles")
    left = order.quantity - order.returned_quantity
    if body.quantity > left:
        raise RefundTooLarge(f"only {left} of this order can still be returned")
    returned = await _return(conn, order, quantity=body.quantity, key=key, now=now)
    await repository.add_order_event(
        conn, order_id, "returned", f"{body.quantity} returned {body.reason}".strip()
    )
    if body.quantity == left and not returned.money_minor:
        await repository.update_exchange_order(conn, order_id, state="refunded")
        await repository.add_order_event(conn, order_id, "refunded", None)
    return await get_order(conn, order_id=order_id, user=user), returned


async def settle_return_money(conn: Connection, *, return_id: UUID, result: GatewayResult) -> None:
    """Record the refund of a return's money part (at most once)."""
    returned = await repository.get_return(conn, return_id, lock=True)
    if returned is None or returned.money_state != "pending":
        return
    if result.outcome is not Outcome.CONFIRMED:
        # A refused refund is an operator's case, never silently dropped: it stays pending.
        if result.outcome is Outcome.FAILED:
            log.error("money refund refused", extra={"return_id": str(return_id),
                                                     "reason": result.reason})  # fmt: skip
        return
    order = await repository.get_exchange_order(conn, returned.order_id, lock=True)
    assert order is not None
    item = await repository.get_item(conn, order.item_id)
    assert item is not None
    txn_id = await service.move(
        conn, key=f"exchange-return:{return_id}:money", kind="exchange_money_refund",
        source=_seller(item), destination=(AccountKind.USER_PAYMENTS, order.user_id),
        asset=order.currency, amount=returned.money_minor,
        memo={"exchange_order": str(order.order_id), "return": str(return_id)},
    )  # fmt: skip
    await repository.settle_return_money(conn, return_id, txn_id)
    if order.returned_quantity == order.quantity and not any(
        r.money_state == "pending" for r in await repository.returns_of(conn, order.order_id)
    ):
        await repository.update_exchange_order(conn, order.order_id, state="refunded")
        await repository.add_order_event(conn, order.order_id, "refunded", None)


async def merchant_fulfils(
    conn: Connection, *, merchant_id: UUID, order_id: UUID, delivered: bool, note: str,
    now: datetime,
) -> ExchangeOrderPublic:  # fmt: skip
    """The seller of merchant goods reports delivery (or that it cannot deliver)."""
    await get_order(conn, order_id=order_id, merchant_id=merchant_id)
    result = GatewayResult(
        Outcome.CONFIRMED if delivered else Outcome.FAILED,
        reason=None if delivered else (note or "merchant could not deliver"),
        reference=note or None,
    )
    await settle_fulfilment(conn, order_id=order_id, result=result, now=now)
    return await get_order(conn, order_id=order_id, merchant_id=merchant_id)


class Providers:
    """The payment and fulfilment providers the exchange works with."""

    def __init__(
        self, *, payments: PaymentGateway, fulfilment: FulfilmentGateway, callback_url: str | None
    ) -> None:
        self.payments = payments
        self.fulfilment = fulfilment
        self.callback_url = callback_url


async def _in_transaction(
    pool: AsyncConnectionPool[Connection], work: Callable[[Connection], Awaitable[None]]
) -> None:
    async with pool.connection() as conn, conn.transaction():
        await work(conn)


async def process(
    pool: AsyncConnectionPool[Connection],
    providers: Providers,
    *,
    order_id: UUID,
    now: datetime,
    ask_status: bool = False,
) -> None:
    """Take a committed order as far as the providers allow: charge, deliver, refund.

    `ask_status` (reconciliation): ask the providers what became of earlier requests
    instead of sending them again.
    """
    async with pool.connection() as conn:
        order = await repository.get_exchange_order(conn, order_id)
        item = None if order is None else await repository.get_item(conn, order.item_id)
    if order is None or item is None:
        return
    if order.state == "placed" and order.payment_state == "pending":
        if ask_status:
            result = await providers.payments.charge_status(request_id=str(order_id))
        else:
            result = await providers.payments.charge(
                request_id=str(order_id), amount_minor=order.unit_minor * order.quantity,
                currency=order.currency, callback_url=providers.callback_url,
            )  # fmt: skip

        async def record_payment(conn: Connection) -> None:
            await settle_payment(conn, order_id=order_id, result=result, now=now)

        await _in_transaction(pool, record_payment)
        async with pool.connection() as conn:
            order = await _fresh(conn, order_id)
    deliverable = order.state == "paid" and item.kind != ItemKind.MERCHANT_GOODS.value
    if deliverable and order.fulfilment_state in {"waiting", "pending"}:
        if ask_status or order.fulfilment_state == "pending":
            result = await providers.fulfilment.fulfilment_status(request_id=str(order_id))
            # Never received: send it now (the provider's request id makes that safe).
            resend = result.outcome is Outcome.FAILED and result.reason == "not_received"
        else:
            resend = True
        if resend:
            result = await providers.fulfilment.fulfil(
                request_id=str(order_id), item_kind=item.kind, sku=item.sku,
                quantity=order.quantity - order.returned_quantity,
                recipient_ref=order.user_id, callback_url=providers.callback_url,
            )  # fmt: skip

        async def record_delivery(conn: Connection) -> None:
            await settle_fulfilment(conn, order_id=order_id, result=result, now=now)

        await _in_transaction(pool, record_delivery)
    await refund_money(pool, providers, order_id=order_id)


async def refund_money(
    pool: AsyncConnectionPool[Connection], providers: Providers, *, order_id: UUID
) -> None:
    """Refund the money part of an order's returns that are still pending."""
    async with pool.connection() as conn:
        pending = [
            r for r in await repository.returns_of(conn, order_id) if r.money_state == "pending"
        ]
    for returned in pending:
        # The refund's request id is the return's: asking again never refunds twice.
        result = await providers.payments.refund(
            payment_id=str(order_id), request_id=str(returned.return_id),
            amount_minor=returned.money_minor,
        )  # fmt: skip

        async def record_refund(conn: Connection, return_id: UUID = returned.return_id,
                                answer: GatewayResult = result) -> None:  # fmt: skip
            await settle_return_money(conn, return_id=return_id, result=answer)

        await _in_transaction(pool, record_refund)


async def reconcile(
    pool: AsyncConnectionPool[Connection],
    providers: Providers,
    *,
    now: datetime,
    grace: timedelta,
    limit: int = 500,
) -> ReconcileReport:
    """Settle orders and refunds left open for longer than `grace` (> the gateway timeout)."""
    async with pool.connection() as conn:
        order_ids, return_ids = await repository.open_exchange_work(
            conn, older_than=now - grace, limit=limit
        )
        for return_id in return_ids:
            found = await repository.get_return(conn, return_id)
            if found is not None and found.order_id not in order_ids:
                order_ids.append(found.order_id)
    metrics.WALLET_RECONCILED.labels("exchange").inc(len(order_ids))
    for order_id in order_ids:
        await process(pool, providers, order_id=order_id, now=now, ask_status=True)
    async with pool.connection() as conn:
        states = Counter([(await _fresh(conn, order_id)).state for order_id in order_ids])
    confirmed = states["fulfilled"]
    failed = states["failed"] + states["refunded"]
    return ReconcileReport(
        examined=len(order_ids),
        confirmed=confirmed,
        failed=failed,
        still_open=len(order_ids) - confirmed - failed,
    )
