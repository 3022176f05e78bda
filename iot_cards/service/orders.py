"""Orders: a card bought from a merchant's stock with a monthly plan, recharges (renewals and
top-ups), and whole refunds. Payment, booking and invoicing happen after the commit: see
`settlement`."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from flowbill import metrics, paging
from flowbill.db import Connection
from flowbill.paging import Page
from iot_cards import idcheck, invoices
from iot_cards.errors import (
    IdempotencyKeyReused,
    InvalidTaxId,
    MerchantNotFound,
    NotRefundable,
    OrderNotFound,
    OutOfStock,
    TransitionNotAllowed,
    WrongPlanKind,
)
from iot_cards.lifecycle import Actor, Command, State
from iot_cards.repository import cards as card_rows
from iot_cards.repository import orders as repository
from iot_cards.repository.merchants import MerchantPlanRow
from iot_cards.repository.orders import OrderRow
from iot_cards.schemas import (
    InvoiceTitle,
    MerchantOrderPublic,
    OrderPublic,
    PlanKind,
    PurchaseCreate,
    RechargeCreate,
    RefundPublic,
)
from iot_cards.service import cards, merchants

ORDERS_SCOPE = "iot-orders"


def _invoice_party(body: InvoiceTitle) -> tuple[str, str | None]:
    if body.invoice_tax_id is not None and not idcheck.valid_tax_id(body.invoice_tax_id):
        raise InvalidTaxId("the invoice tax id is not a valid unified social credit code")
    return body.invoice_title or invoices.INDIVIDUAL, body.invoice_tax_id


async def _insert_order(
    conn: Connection,
    *,
    kind: str,
    key: str,
    merchant_id: UUID,
    buyer_id: UUID,
    iccid: str,
    plan: MerchantPlanRow,
    body: InvoiceTitle,
    now: datetime,
) -> tuple[OrderRow, bool]:
    """The order for its key, priced from the merchant's plan as it is now."""
    title, tax_id = _invoice_party(body)
    return await repository.insert_order(
        conn,
        idempotency_key=key,
        kind=kind,
        merchant_id=merchant_id,
        buyer_id=buyer_id,
        iccid=iccid,
        plan_id=plan.plan_id,
        plan_kind=plan.kind,
        plan_name=plan.name,
        data_bytes=plan.data_bytes,
        months=plan.months,
        retail_minor=plan.retail_minor,
        wholesale_minor=plan.wholesale_minor,
        currency=plan.currency,
        invoice_title=title,
        invoice_tax_id=tax_id,
        created_at=now,
    )


async def purchase(
    conn: Connection, *, buyer_id: UUID, key: str, body: PurchaseCreate, now: datetime
) -> tuple[OrderPublic, bool]:
    """Order a card from a merchant's stock with a monthly plan; returns the order and
    whether it is new (then the payment is to be taken: `settlement.process_order`)."""
    _invoice_party(body)
    existing = await repository.order_by_key(conn, key)
    if existing is not None:
        if (existing.kind, existing.merchant_id, existing.plan_id) != (
            "purchase",
            body.merchant_id,
            body.plan_id,
        ):
            raise IdempotencyKeyReused("this Idempotency-Key was used for another order")
        return OrderPublic.model_validate(existing), False
    if await merchants.seller(conn, body.merchant_id) is None:
        raise MerchantNotFound(f"no store {body.merchant_id}")
    plan = await merchants.offered(conn, body.merchant_id, body.plan_id)
    if plan.kind != PlanKind.MONTHLY:
        raise WrongPlanKind("a card is bought with a monthly plan; top-ups are recharges")
    iccid = await repository.take_card_from_stock(conn, body.merchant_id)
    if iccid is None:
        raise OutOfStock("this store has no card left")
    order, created = await _insert_order(
        conn,
        kind="purchase",
        key=key,
        merchant_id=body.merchant_id,
        buyer_id=buyer_id,
        iccid=iccid,
        plan=plan,
        body=body,
        now=now,
    )
    if not created:
        return OrderPublic.model_validate(order), False
    card = await card_rows.get_card(conn, iccid, lock=True)
    assert card is not None
    await cards.transition(
        conn,
        card,
        Command.SELL,
        actor=Actor.SYSTEM,
        now=now,
        reason=f"order {order.order_id}",
        holder_id=buyer_id,
        plan_id=plan.plan_id,
    )
    metrics.IOT_ORDERS.labels("purchase", "placed").inc()
    return OrderPublic.model_validate(order), True


async def recharge(
    conn: Connection,
    *,
    buyer_id: UUID,
    iccid: str,
    key: str,
    body: RechargeCreate,
    now: datetime,
) -> tuple[OrderPublic, bool]:
    """Buy more data for your card: a monthly plan renews it (after its current term), a
    top-up adds data to this month."""
    _invoice_party(body)
    existing = await repository.order_by_key(conn, key)
    if existing is not None:
        if (existing.kind, existing.iccid, existing.plan_id) != ("recharge", iccid, body.plan_id):
            raise IdempotencyKeyReused("this Idempotency-Key was used for another order")
        return OrderPublic.model_validate(existing), False
    card = await cards.find_card(conn, iccid, holder_id=buyer_id)
    if card.state in (State.TERMINATED, State.INVENTORY):
        raise TransitionNotAllowed(
            f"a card that is {card.state} cannot be recharged",
            state=card.state,
            command="recharge",
            allowed=cards.allowed_commands(card, Actor.HOLDER),
        )
    assert card.merchant_id is not None
    plan = await merchants.offered(conn, card.merchant_id, body.plan_id)
    order, created = await _insert_order(
        conn,
        kind="recharge",
        key=key,
        merchant_id=card.merchant_id,
        buyer_id=buyer_id,
        iccid=iccid,
        plan=plan,
        body=body,
        now=now,
    )
    if created:
        metrics.IOT_ORDERS.labels("recharge", "placed").inc()
    return OrderPublic.model_validate(order), created


async def get_order(
    conn: Connection,
    *,
    order_id: UUID,
    merchant_id: UUID | None = None,
    buyer_id: UUID | None = None,
) -> OrderRow:
    """An order its merchant or buyer may see; anyone else is told it does not exist."""
    order = await repository.get_order(conn, order_id)
    if (
        order is None
        or (merchant_id is not None and order.merchant_id != merchant_id)
        or (buyer_id is not None and order.buyer_id != buyer_id)
    ):
        raise OrderNotFound(f"no order {order_id}")
    return order


async def buyer_order(conn: Connection, *, order_id: UUID, buyer_id: UUID) -> OrderPublic:
    """One of the buyer's orders."""
    return OrderPublic.model_validate(await get_order(conn, order_id=order_id, buyer_id=buyer_id))


async def merchant_order(
    conn: Connection, *, order_id: UUID, merchant_id: UUID
) -> MerchantOrderPublic:
    """One of the merchant's orders, with the wholesale price and its revenue."""
    order = await get_order(conn, order_id=order_id, merchant_id=merchant_id)
    return MerchantOrderPublic.model_validate(order)


async def _orders(
    conn: Connection,
    *,
    merchant_id: UUID | None = None,
    buyer_id: UUID | None = None,
    cursor: str | None,
    limit: int,
) -> Page[OrderRow]:
    after = (
        None
        if cursor is None
        else paging.decode_cursor(cursor, (datetime, UUID), scope=ORDERS_SCOPE)
    )
    rows = await repository.list_orders(
        conn, merchant_id=merchant_id, buyer_id=buyer_id, after=after, limit=limit
    )
    return paging.page(
        rows, limit=limit, key=lambda o: (o.created_at, o.order_id), scope=ORDERS_SCOPE
    )


async def buyer_orders(
    conn: Connection, *, buyer_id: UUID, cursor: str | None, limit: int
) -> Page[OrderPublic]:
    """One page of the buyer's orders, newest first."""
    found = await _orders(conn, buyer_id=buyer_id, cursor=cursor, limit=limit)
    return Page[OrderPublic].model_validate(found, from_attributes=True)


async def merchant_orders(
    conn: Connection, *, merchant_id: UUID, cursor: str | None, limit: int
) -> Page[MerchantOrderPublic]:
    """One page of the merchant's orders, newest first, with wholesale price and revenue."""
    found = await _orders(conn, merchant_id=merchant_id, cursor=cursor, limit=limit)
    return Page[MerchantOrderPublic].model_validate(found, from_attributes=True)


async def paid_purchase(conn: Connection, *, iccid: str, buyer_id: UUID) -> bool:
    """Whether the buyer's purchase of the card is paid."""
    return await repository.paid_purchase_exists(conn, iccid=iccid, buyer_id=buyer_id)


async def request_refund(
    conn: Connection, *, merchant_id: UUID, order_id: UUID, key: str, reason: str
) -> tuple[RefundPublic, bool]:
    """Refund a paid order whole: the money goes back through the payment gateway, then the
    books are reversed, the data withdrawn and a red-letter invoice issued."""
    existing = await repository.get_refund(conn, key=key)
    if existing is not None:
        if existing.order_id != order_id:
            raise IdempotencyKeyReused("this Idempotency-Key was used for another refund")
        await get_order(conn, order_id=order_id, merchant_id=merchant_id)
        return RefundPublic.model_validate(existing), False
    order = await get_order(conn, order_id=order_id, merchant_id=merchant_id)
    order = await repository.get_order(conn, order_id, lock=True) or order
    if order.state != "paid":
        raise NotRefundable(f"an order that is {order.state} cannot be refunded")
    refund = await repository.insert_refund(
        conn, order_id=order_id, key=key, amount_minor=order.retail_minor, reason=reason
    )
    await repository.update_order(conn, order_id, state="refunding")
    return RefundPublic.model_validate(refund), True


async def refund_of(conn: Connection, *, merchant_id: UUID, order_id: UUID) -> RefundPublic:
    """Where the refund of one of the merchant's orders stands."""
    await get_order(conn, order_id=order_id, merchant_id=merchant_id)
    row = await repository.get_refund(conn, order_id=order_id)
    if row is None:
        raise OrderNotFound(f"order {order_id} has no refund")
    return RefundPublic.model_validate(row)
