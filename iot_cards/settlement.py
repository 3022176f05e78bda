"""Settling IoT orders with the outside parties: payments and refunds (the wallet's payment
adapter), real-name checks (the identity-check provider) and invoices (the tax authority).

Requests to a party are sent after the order's transaction committed, under the order's,
refund's, verification's or invoice's id as the party's idempotency key; each answer is
recorded in a short transaction of its own, at most once. An unclear answer (timeout, 5xx)
leaves the work open, and `reconcile` settles it later by asking the party its status.

Money: a captured payment of the retail price P for a plan of wholesale price W is booked in
the wallet's ledger as two balanced transactions from the buyer's payments account: P − W to
the merchant (merchant_payments) and W to the platform (platform_revenue). A refund books
the same two amounts back. The merchant's and the platform's shares always add up to P.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from uuid import UUID

from psycopg_pool import AsyncConnectionPool

from flowbill import db, metrics
from flowbill.db import Connection
from flowbill.periods import Calendar, next_month
from iot_cards import invoices
from iot_cards.gateways import IdentityGateway, InvoiceGateway
from iot_cards.lifecycle import Actor, Command, State
from iot_cards.repository import cards as card_rows
from iot_cards.repository import orders as order_rows
from iot_cards.repository import settlement as repository
from iot_cards.repository import statements as invoice_rows
from iot_cards.repository import usage as grants
from iot_cards.repository import verification as verification_rows
from iot_cards.repository.orders import OrderRow
from iot_cards.schemas import PlanKind, ReconcileReport
from iot_cards.service import cards, merchants, usage, verification
from iot_cards.service.cards import QUOTA_EXHAUSTED
from iot_cards.service.verification import IdentityRequest
from wallet import service as ledger
from wallet.gateways import GatewayResult, Outcome, PaymentGateway
from wallet.service import PLATFORM, AccountKind

log = logging.getLogger(__name__)


async def _in_transaction(
    pool: AsyncConnectionPool[Connection], work: Callable[[Connection], Awaitable[None]]
) -> None:
    async with db.transaction(pool) as conn:
        await work(conn)


# --- payments ----------------------------------------------------------------------------


async def _book_sale(conn: Connection, order: OrderRow) -> tuple[int | None, int]:
    """The payment split in the ledger: (merchant's transaction, platform's transaction)."""
    buyer = (AccountKind.USER_PAYMENTS, str(order.buyer_id))
    memo: dict[str, object] = {"iot_order": str(order.order_id), "iccid": order.iccid}
    revenue = order.retail_minor - order.wholesale_minor
    merchant_txn = None
    if revenue > 0:
        merchant_txn = await ledger.move(
            conn,
            key=f"iot-order:{order.order_id}:merchant",
            kind="iot_sale_merchant",
            source=buyer,
            destination=(AccountKind.MERCHANT_PAYMENTS, str(order.merchant_id)),
            asset=order.currency,
            amount=revenue,
            memo=memo,
        )
    platform_txn = await ledger.move(
        conn,
        key=f"iot-order:{order.order_id}:wholesale",
        kind="iot_sale_wholesale",
        source=buyer,
        destination=(AccountKind.PLATFORM_REVENUE, PLATFORM),
        asset=order.currency,
        amount=order.wholesale_minor,
        memo=memo,
    )
    return merchant_txn, platform_txn


async def _grant(conn: Connection, order: OrderRow, now: datetime, calendar: Calendar) -> None:
    """Put the order's data on the card: a monthly term after the current one, or a top-up
    for this month."""
    month = calendar.period_of(now)
    if order.plan_kind == PlanKind.MONTHLY:
        latest = await grants.latest_term_end(conn, order.iccid, monthly=True)
        # Terms run from month start to month start: a renewal starts when the last ends.
        starts = calendar.start(month) if latest is None else max(calendar.start(month), latest)
        ends = calendar.start(next_month(calendar.period_of(starts), order.months))
        await card_rows.update_card(conn, order.iccid, plan_id=order.plan_id)
    else:
        starts, ends = calendar.start(month), calendar.end(month)
    await grants.insert_grant(
        conn,
        order_id=order.order_id,
        iccid=order.iccid,
        data_bytes=order.data_bytes,
        starts_at=starts,
        ends_at=ends,
    )


async def settle_payment(
    conn: Connection, *, order_id: UUID, result: GatewayResult, now: datetime, calendar: Calendar
) -> bool:
    """Record the payment provider's answer for an order (at most once); True when the
    order was paid now."""
    order = await order_rows.get_order(conn, order_id, lock=True)
    if order is None or order.state != "placed":
        return False
    if result.outcome is Outcome.CONFIRMED:
        merchant_txn, platform_txn = await _book_sale(conn, order)
        await order_rows.update_order(
            conn,
            order_id,
            state="paid",
            paid_at=now,
            payment_ref=result.reference,
            merchant_txn_id=merchant_txn,
            platform_txn_id=platform_txn,
        )
        await _grant(conn, order, now, calendar)
        profile = await merchants.seller(conn, order.merchant_id)
        assert profile is not None
        document = invoices.blue_document(
            order_id=str(order_id),
            kind=order.kind,
            plan_name=order.plan_name,
            iccid=order.iccid,
            total_minor=order.retail_minor,
            currency=order.currency,
            seller_name=profile[0],
            seller_tax_id=profile[1],
            buyer_name=order.invoice_title,
            buyer_tax_id=order.invoice_tax_id,
        )
        await invoice_rows.insert_invoice(
            conn, order=order, colour="blue", original_invoice_id=None, document=document
        )
        card = await card_rows.get_card(conn, order.iccid)
        if card is not None and QUOTA_EXHAUSTED in card.block_reasons:
            # More data can only unblock: judge the card (and its pool) now, not at the sweep.
            await usage.evaluate_usage(conn, now=now, calendar=calendar, iccids=[order.iccid])
        metrics.IOT_ORDERS.labels(order.kind, "paid").inc()
        return True
    if result.outcome is Outcome.FAILED:
        await order_rows.update_order(
            conn, order_id, state="failed", reason=f"payment {result.reason or 'failed'}"
        )
        if order.kind == "purchase":
            card = await card_rows.get_card(conn, order.iccid, lock=True)
            assert card is not None
            if card.state == State.SOLD and card.holder_id == order.buyer_id:
                await cards.transition(
                    conn,
                    card,
                    Command.RELEASE,
                    actor=Actor.SYSTEM,
                    now=now,
                    reason=f"payment of order {order_id} failed",
                    holder_id=None,
                    plan_id=None,
                )
        metrics.IOT_ORDERS.labels(order.kind, "failed").inc()
    return False


async def process_order(
    pool: AsyncConnectionPool[Connection],
    payments: PaymentGateway,
    invoicer: InvoiceGateway,
    *,
    order_id: UUID,
    callback_url: str | None,
    calendar: Calendar,
    ask_status: bool = False,
) -> None:
    """Charge an order's payment (or ask what became of it), record the answer, and issue
    the invoice once it is paid."""
    async with pool.connection() as conn:
        order = await order_rows.get_order(conn, order_id)
    if order is None:
        return
    if order.state == "placed":
        if ask_status:
            result = await payments.charge_status(request_id=str(order_id))
        else:
            result = await payments.charge(
                request_id=str(order_id),
                amount_minor=order.retail_minor,
                currency=order.currency,
                callback_url=callback_url,
            )
        now = datetime.now(UTC)

        async def record(conn: Connection) -> None:
            await settle_payment(conn, order_id=order_id, result=result, now=now, calendar=calendar)

        await _in_transaction(pool, record)
    await issue_invoices(pool, invoicer, order_id=order_id, calendar=calendar)


# --- refunds -----------------------------------------------------------------------------


async def settle_refund(
    conn: Connection, *, refund_id: UUID, result: GatewayResult, now: datetime, calendar: Calendar
) -> None:
    """Record the refund's answer (at most once): the books reversed, the data withdrawn,
    the card released or terminated, and a red-letter invoice to issue."""
    refund = await order_rows.get_refund(conn, refund_id=refund_id, lock=True)
    if refund is None or refund.state != "pending":
        return
    order = await order_rows.get_order(conn, refund.order_id, lock=True)
    assert order is not None
    if result.outcome is Outcome.FAILED:
        await order_rows.update_refund(
            conn, refund_id, state="failed", settled_at=now, failure=result.reason or "refused"
        )
        await order_rows.update_order(conn, order.order_id, state="paid")
        log.error(
            "iot refund refused", extra={"refund_id": str(refund_id), "reason": result.reason}
        )
        return
    if result.outcome is not Outcome.CONFIRMED:
        return
    buyer = (AccountKind.USER_PAYMENTS, str(order.buyer_id))
    memo: dict[str, object] = {"iot_order": str(order.order_id), "iot_refund": str(refund_id)}
    revenue = order.retail_minor - order.wholesale_minor
    if revenue > 0:
        await ledger.move(
            conn,
            key=f"iot-refund:{refund_id}:merchant",
            kind="iot_refund_merchant",
            source=(AccountKind.MERCHANT_PAYMENTS, str(order.merchant_id)),
            destination=buyer,
            asset=order.currency,
            amount=revenue,
            memo=memo,
        )
    await ledger.move(
        conn,
        key=f"iot-refund:{refund_id}:wholesale",
        kind="iot_refund_wholesale",
        source=(AccountKind.PLATFORM_REVENUE, PLATFORM),
        destination=buyer,
        asset=order.currency,
        amount=order.wholesale_minor,
        memo=memo,
    )
    await order_rows.update_refund(conn, refund_id, state="refunded", settled_at=now)
    await order_rows.update_order(conn, order.order_id, state="refunded")
    await grants.cancel_grant(conn, order.order_id)
    card = await card_rows.get_card(conn, order.iccid, lock=True)
    assert card is not None
    if order.kind == "purchase" and card.holder_id == order.buyer_id:
        await verification.give_back_slot(conn, card)
        if card.state in (State.SOLD, State.PENDING_VERIFICATION):
            await cards.transition(
                conn,
                card,
                Command.RELEASE,
                actor=Actor.SYSTEM,
                now=now,
                reason=f"order {order.order_id} refunded",
                holder_id=None,
                plan_id=None,
                verification_id=None,
            )
        elif card.state != State.TERMINATED:
            await cards.transition(
                conn,
                card,
                Command.TERMINATE,
                actor=Actor.SYSTEM,
                now=now,
                reason=f"order {order.order_id} refunded",
            )
    else:
        await usage.evaluate_usage(conn, now=now, calendar=calendar, iccids=[order.iccid])
    blue = await invoice_rows.invoice_of(conn, order.order_id, "blue")
    assert blue is not None
    # The red-letter document is made from the blue one once that has its number.
    await invoice_rows.insert_invoice(
        conn, order=order, colour="red", original_invoice_id=blue.invoice_id, document={}
    )
    metrics.IOT_ORDERS.labels(order.kind, "refunded").inc()


async def process_refund(
    pool: AsyncConnectionPool[Connection],
    payments: PaymentGateway,
    invoicer: InvoiceGateway,
    *,
    refund_id: UUID,
    calendar: Calendar,
    ask_status: bool = False,
) -> None:
    """Send a refund to the payment provider (or ask about it), record it, issue the red
    invoice."""
    async with pool.connection() as conn:
        refund = await order_rows.get_refund(conn, refund_id=refund_id)
    if refund is None:
        return
    if refund.state == "pending":
        if ask_status:
            result = await payments.refund_status(
                payment_id=str(refund.order_id), request_id=str(refund_id)
            )
            if result.outcome is Outcome.FAILED and result.reason == "not_received":
                ask_status = False
        if not ask_status:
            result = await payments.refund(
                payment_id=str(refund.order_id),
                request_id=str(refund_id),
                amount_minor=refund.amount_minor,
            )
        now = datetime.now(UTC)

        async def record(conn: Connection) -> None:
            await settle_refund(
                conn, refund_id=refund_id, result=result, now=now, calendar=calendar
            )

        await _in_transaction(pool, record)
    await issue_invoices(pool, invoicer, order_id=refund.order_id, calendar=calendar)


# --- invoices ----------------------------------------------------------------------------


async def issue_invoices(
    pool: AsyncConnectionPool[Connection],
    invoicer: InvoiceGateway,
    *,
    order_id: UUID,
    calendar: Calendar,
) -> None:
    """Have the order's pending invoices numbered by the tax authority: the blue one first,
    then a red-letter one that cancels it."""
    for colour in ("blue", "red"):
        async with pool.connection() as conn:
            row = await invoice_rows.invoice_of(conn, order_id, colour)
            original = None
            if row is not None and row.original_invoice_id is not None:
                original = await invoice_rows.get_invoice(conn, row.original_invoice_id)
        if row is None or row.state == "issued":
            continue
        document = row.document
        if colour == "red":
            if original is None or original.number is None:
                return
            document = invoices.red_document(original.document, original_number=original.number)
        result = await invoicer.issue_invoice(request_id=str(row.invoice_id), document=document)
        if result.outcome is Outcome.PENDING or result.outcome is Outcome.UNKNOWN:
            return
        if result.outcome is Outcome.FAILED and result.reason == "not_received":
            return
        number = result.detail.get("invoice_number")
        if result.outcome is not Outcome.CONFIRMED or not invoices.is_invoice_number(number):
            # Refused: an operator's case; the invoice stays pending and visible.
            log.error(
                "invoice not issued",
                extra={"invoice_id": str(row.invoice_id), "reason": result.reason},
            )
            return
        assert isinstance(number, str)
        issued_at = datetime.now(UTC)
        issued_on = _issued_on(result.detail.get("issued_on"), calendar.day_of(issued_at))
        numbered = invoices.numbered(document, number=number, issued_on=issued_on)
        async with db.transaction(pool) as conn:
            await invoice_rows.issue_invoice(
                conn, row.invoice_id, number=number, issued_at=issued_at, document=numbered
            )
        metrics.IOT_INVOICES.labels(colour).inc()


def _issued_on(value: object, fallback: date) -> date:
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    return fallback


# --- verification ------------------------------------------------------------------------


async def settle_verification(
    conn: Connection, *, verification_id: UUID, result: GatewayResult, now: datetime
) -> None:
    """Record the identity-check provider's answer (at most once)."""
    row = await verification_rows.get_verification(conn, verification_id, lock=True)
    if row is None or row.state != "pending":
        return
    if result.outcome is Outcome.CONFIRMED:
        await verification_rows.update_verification(
            conn, verification_id, state="verified", settled_at=now
        )
        metrics.IOT_VERIFICATIONS.labels("verified").inc()
        return
    if result.outcome is not Outcome.FAILED:
        return
    reason = result.reason or "rejected"
    await verification_rows.update_verification(
        conn, verification_id, state="rejected", reason=reason, settled_at=now
    )
    card = await card_rows.get_card(conn, row.iccid, lock=True)
    assert card is not None
    await verification.give_back_slot(conn, card)
    if card.state == State.PENDING_VERIFICATION and card.verification_id == verification_id:
        await cards.transition(
            conn, card, Command.REJECT_VERIFICATION, actor=Actor.SYSTEM, now=now, reason=reason
        )
    metrics.IOT_VERIFICATIONS.labels("rejected").inc()


async def submit_identity_check(
    pool: AsyncConnectionPool[Connection],
    identity: IdentityGateway,
    request: IdentityRequest,
    *,
    callback_url: str | None,
) -> None:
    """Send a verification to the identity-check provider; its answer comes by callback."""
    result = await identity.submit_identity_check(
        request_id=request.request_id,
        name=request.name,
        id_number=request.id_number,
        phone=request.phone,
        callback_url=callback_url,
    )
    if result.outcome in (Outcome.CONFIRMED, Outcome.FAILED):
        now = datetime.now(UTC)

        async def record(conn: Connection) -> None:
            await settle_verification(
                conn, verification_id=UUID(request.request_id), result=result, now=now
            )

        await _in_transaction(pool, record)


async def _ask_verification(
    pool: AsyncConnectionPool[Connection], identity: IdentityGateway, verification_id: UUID
) -> None:
    result = await identity.identity_check_status(request_id=str(verification_id))
    if result.outcome is Outcome.FAILED and result.reason == "not_received":
        # We keep no name or ID number to resend: the holder submits again.
        result = GatewayResult(Outcome.FAILED, reason="not_received_by_provider")
    now = datetime.now(UTC)

    async def record(conn: Connection) -> None:
        await settle_verification(conn, verification_id=verification_id, result=result, now=now)

    await _in_transaction(pool, record)


# --- reconciliation ----------------------------------------------------------------------


async def reconcile(
    pool: AsyncConnectionPool[Connection],
    *,
    payments: PaymentGateway,
    invoicer: InvoiceGateway,
    identity: IdentityGateway,
    now: datetime,
    grace: timedelta,
    calendar: Calendar,
    limit: int = 500,
) -> ReconcileReport:
    """Settle payments, refunds, invoices and verifications left open for longer than
    `grace` (more than the gateway timeout) by asking the parties."""
    async with pool.connection() as conn:
        order_ids, refund_ids, invoice_ids, verification_ids = await repository.open_work(
            conn, older_than=now - grace, limit=limit
        )
        invoice_orders = []
        for invoice_id in invoice_ids:
            row = await invoice_rows.get_invoice(conn, invoice_id)
            if row is not None:
                invoice_orders.append(row.order_id)
    for order_id in order_ids:
        await process_order(
            pool,
            payments,
            invoicer,
            order_id=order_id,
            callback_url=None,
            calendar=calendar,
            ask_status=True,
        )
    for refund_id in refund_ids:
        await process_refund(
            pool, payments, invoicer, refund_id=refund_id, calendar=calendar, ask_status=True
        )
    for order_id in dict.fromkeys(invoice_orders):
        await issue_invoices(pool, invoicer, order_id=order_id, calendar=calendar)
    for verification_id in verification_ids:
        await _ask_verification(pool, identity, verification_id)
    return ReconcileReport(
        payments=len(order_ids),
        refunds=len(refund_ids),
        invoices=len(invoice_ids),
        verifications=len(verification_ids),
    )
