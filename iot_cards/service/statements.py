"""A merchant's books: the month's sales and refunds with what it earned, the people who
bought from it, and the electronic invoices of orders and refunds (also for their buyers)."""

from __future__ import annotations

from datetime import date, datetime
from uuid import UUID

from flowbill import paging
from flowbill.db import Connection
from flowbill.paging import Page
from flowbill.periods import Calendar, format_period
from iot_cards import invoices
from iot_cards.errors import BuyerNotFound, InvoiceNotFound, InvoicePending
from iot_cards.repository import statements as repository
from iot_cards.repository.orders import OrderRow
from iot_cards.repository.statements import InvoiceRow
from iot_cards.schemas import (
    BuyerPublic,
    InvoicePublic,
    StatementLine,
    StatementPublic,
    StatementTotals,
)

BUYERS_SCOPE = "iot-buyers"
INVOICES_SCOPE = "iot-invoices"


def _line(order: OrderRow, at: datetime, sign: int) -> StatementLine:
    # A refund is its sale's line with the amounts negated.
    return StatementLine(
        order_id=order.order_id,
        kind=order.kind,
        iccid=order.iccid,
        plan_name=order.plan_name,
        at=at,
        retail_minor=sign * order.retail_minor,
        wholesale_minor=sign * order.wholesale_minor,
        revenue_minor=sign * (order.retail_minor - order.wholesale_minor),
    )


async def statement(
    conn: Connection,
    *,
    merchant_id: UUID,
    month: date,
    calendar: Calendar,
    currency: str = "CNY",
) -> StatementPublic:
    """A month's sales and refunds (billing time zone), with what you earned: retail −
    wholesale."""
    since, until = calendar.start(month), calendar.end(month)
    sales = [
        _line(o, o.paid_at, 1)
        for o in await repository.paid_between(conn, merchant_id, since=since, until=until)
        if o.currency == currency and o.paid_at is not None
    ]
    refunds = [
        _line(o, at, -1)
        for o, at in await repository.refunded_between(conn, merchant_id, since=since, until=until)
        if o.currency == currency
    ]
    lines = sales + refunds
    totals = StatementTotals(
        orders=len(sales),
        refunds=len(refunds),
        gross_minor=sum(x.retail_minor for x in lines),
        wholesale_minor=sum(x.wholesale_minor for x in lines),
        revenue_minor=sum(x.revenue_minor for x in lines),
    )
    return StatementPublic(
        merchant_id=merchant_id,
        month=format_period(month),
        currency=currency,
        sales=sales,
        refunds=refunds,
        totals=totals,
    )


async def buyers(
    conn: Connection, *, merchant_id: UUID, cursor: str | None, limit: int
) -> Page[BuyerPublic]:
    """One page of the people who bought from you, by their first order: masked names only."""
    after = (
        None
        if cursor is None
        else paging.decode_cursor(cursor, (datetime, UUID), scope=BUYERS_SCOPE)
    )
    rows = await repository.buyers_of(conn, merchant_id, after=after, limit=limit)
    found = paging.page(
        rows, limit=limit, key=lambda b: (b.first_order_at, b.buyer_id), scope=BUYERS_SCOPE
    )
    return Page[BuyerPublic].model_validate(found, from_attributes=True)


async def buyer(conn: Connection, *, merchant_id: UUID, buyer_id: UUID) -> BuyerPublic:
    """One of the people who bought from you."""
    found = await repository.buyers_of(conn, merchant_id, buyer_id=buyer_id, limit=1)
    if not found:
        raise BuyerNotFound(f"no buyer {buyer_id}")
    return BuyerPublic.model_validate(found[0])


async def get_invoice(
    conn: Connection,
    *,
    invoice_id: UUID,
    merchant_id: UUID | None = None,
    buyer_id: UUID | None = None,
) -> InvoicePublic:
    """An invoice its merchant or buyer may see; anyone else is told it does not exist."""
    return InvoicePublic.model_validate(
        await _invoice(conn, invoice_id=invoice_id, merchant_id=merchant_id, buyer_id=buyer_id)
    )


async def _invoice(
    conn: Connection,
    *,
    invoice_id: UUID,
    merchant_id: UUID | None = None,
    buyer_id: UUID | None = None,
) -> InvoiceRow:
    row = await repository.get_invoice(conn, invoice_id)
    if (
        row is None
        or (merchant_id is not None and row.merchant_id != merchant_id)
        or (buyer_id is not None and row.buyer_id != buyer_id)
    ):
        raise InvoiceNotFound(f"no invoice {invoice_id}")
    return row


async def list_invoices(
    conn: Connection,
    *,
    merchant_id: UUID | None = None,
    buyer_id: UUID | None = None,
    cursor: str | None,
    limit: int,
) -> Page[InvoicePublic]:
    """One page of a merchant's or a buyer's invoices, newest first."""
    after = (
        None
        if cursor is None
        else paging.decode_cursor(cursor, (datetime, UUID), scope=INVOICES_SCOPE)
    )
    rows = await repository.list_invoices(
        conn, merchant_id=merchant_id, buyer_id=buyer_id, after=after, limit=limit
    )
    found = paging.page(
        rows, limit=limit, key=lambda i: (i.created_at, i.invoice_id), scope=INVOICES_SCOPE
    )
    return Page[InvoicePublic].model_validate(found, from_attributes=True)


async def invoice_pdf(
    conn: Connection,
    *,
    invoice_id: UUID,
    merchant_id: UUID | None = None,
    buyer_id: UUID | None = None,
) -> bytes:
    """An issued invoice as a PDF a person can read."""
    row = await _invoice(conn, invoice_id=invoice_id, merchant_id=merchant_id, buyer_id=buyer_id)
    if row.state != "issued":
        raise InvoicePending("the invoice has no number yet; try again shortly")
    return invoices.render_pdf(row.document)
