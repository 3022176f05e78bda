"""IoT merchants: the seller profile, retail prices, card inventory and lifecycle, orders and
refunds, buyers, usage and its thresholds, monthly statements and invoices. A merchant sees
only its own cards, orders and buyers: anything else answers 404."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, BackgroundTasks, Path, Query, Response, status

from api.deps import (
    CalendarDep,
    ConnDep,
    GatewaysDep,
    IdempotencyKey,
    IotGatewaysDep,
    MerchantCaller,
    PoolDep,
    ledger_key,
)
from api.deps import after_response as after
from api.params import Cursor, Limit
from api.responses import PDF_RESPONSES, pdf_response
from flowbill.paging import DEFAULT_LIMIT, Page
from flowbill.periods import parse_period
from iot_cards import settlement
from iot_cards.lifecycle import Actor, State
from iot_cards.schemas import (
    BuyerPublic,
    CardCommand,
    CardDetail,
    CardPublic,
    ImeiBody,
    InvoicePublic,
    MerchantOrderPublic,
    MerchantPlanPublic,
    MerchantPlanSet,
    RefundPublic,
    RefundRequest,
    SellerProfile,
    StatementPublic,
    ThresholdCreate,
    ThresholdPublic,
    UsageAlert,
    UsagePublic,
    WholesalePlanPublic,
)
from iot_cards.service import (
    cards,
    commands,
    devices,
    inventory,
    merchants,
    orders,
    statements,
    usage,
)

router = APIRouter(prefix="/v1/merchant/iot", tags=["iot cards: merchants"])

Iccid = Annotated[str, Path(pattern=r"^[0-9]{19,20}$", description="The card's ICCID.")]


@router.put("/profile")
async def set_profile(conn: ConnDep, caller: MerchantCaller, body: SellerProfile) -> SellerProfile:
    """Your seller name and tax id (unified social credit code), printed on invoices."""
    return await merchants.set_profile(conn, merchant_id=caller.tenant_id, body=body)


@router.get("/wholesale-plans")
async def wholesale_plans(
    conn: ConnDep, _: MerchantCaller, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> Page[WholesalePlanPublic]:
    """The platform's plans you may sell, at their wholesale price, oldest first."""
    return await inventory.list_plans(conn, active=True, cursor=cursor, limit=limit)


@router.get("/plans")
async def plans(
    conn: ConnDep, caller: MerchantCaller, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> Page[MerchantPlanPublic]:
    """Your plans with retail price, wholesale price and margin, oldest plan first."""
    return await merchants.merchant_plans(
        conn, merchant_id=caller.tenant_id, cursor=cursor, limit=limit
    )


@router.put("/plans/{plan_id}")
async def set_price(
    conn: ConnDep, caller: MerchantCaller, plan_id: UUID, body: MerchantPlanSet
) -> MerchantPlanPublic:
    """Sell a plan at your retail price (never below wholesale); a pooled plan shares its
    data across all your cards on it."""
    return await merchants.set_price(conn, merchant_id=caller.tenant_id, plan_id=plan_id, body=body)


@router.get("/cards")
async def card_list(
    conn: ConnDep,
    caller: MerchantCaller,
    state: State | None = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Page[CardPublic]:
    """Your cards in ICCID order, optionally in one state."""
    return await cards.list_cards(
        conn, merchant_id=caller.tenant_id, state=state, cursor=cursor, limit=limit
    )


@router.get("/cards/{iccid}")
async def card(conn: ConnDep, caller: MerchantCaller, iccid: Iccid) -> CardDetail:
    """A card with its history and the commands you may give it."""
    return await cards.card_detail(conn, iccid=iccid, merchant_id=caller.tenant_id)


@router.post("/cards/{iccid}/commands")
async def command(
    conn: ConnDep, caller: MerchantCaller, key: IdempotencyKey, iccid: Iccid, body: CardCommand
) -> CardDetail:
    """Suspend, resume or terminate a card: now, at an earlier time, or scheduled."""
    return await commands.command(
        conn,
        iccid=iccid,
        actor=Actor.MERCHANT,
        caller_id=caller.tenant_id,
        key=ledger_key(caller, "iot-card", key),
        body=body,
        now=datetime.now(UTC),
    )


@router.post("/cards/{iccid}/activation")
async def activate(
    conn: ConnDep,
    caller: MerchantCaller,
    key: IdempotencyKey,
    iccid: Iccid,
    body: ImeiBody,
    calendar: CalendarDep,
) -> CardDetail:
    """Activate a verified card for its holder, binding it to the device's IMEI."""
    return await devices.activate(
        conn,
        iccid=iccid,
        actor=Actor.MERCHANT,
        caller_id=caller.tenant_id,
        key=ledger_key(caller, "iot-card", key),
        imei=body.imei,
        now=datetime.now(UTC),
        calendar=calendar,
    )


@router.post("/cards/{iccid}/device-reports")
async def device_report(
    conn: ConnDep, caller: MerchantCaller, iccid: Iccid, body: ImeiBody
) -> CardDetail:
    """Your device platform reports the IMEI the card is in now (another one blocks it)."""
    return await devices.report_imei(
        conn,
        iccid=iccid,
        actor=Actor.MERCHANT,
        caller_id=caller.tenant_id,
        imei=body.imei,
        now=datetime.now(UTC),
    )


@router.get("/cards/{iccid}/usage")
async def card_usage(
    conn: ConnDep, caller: MerchantCaller, iccid: Iccid, calendar: CalendarDep
) -> UsagePublic:
    """A card's data use this month against its plan (and its pool's), per app."""
    return await usage.card_usage(
        conn,
        iccid=iccid,
        merchant_id=caller.tenant_id,
        now=datetime.now(UTC),
        calendar=calendar,
    )


@router.get("/orders")
async def order_list(
    conn: ConnDep, caller: MerchantCaller, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> Page[MerchantOrderPublic]:
    """Your orders, newest first, with wholesale price and your revenue."""
    return await orders.merchant_orders(
        conn, merchant_id=caller.tenant_id, cursor=cursor, limit=limit
    )


@router.get("/orders/{order_id}")
async def order(conn: ConnDep, caller: MerchantCaller, order_id: UUID) -> MerchantOrderPublic:
    """One of your orders."""
    return await orders.merchant_order(conn, order_id=order_id, merchant_id=caller.tenant_id)


@router.post("/orders/{order_id}/refunds", status_code=status.HTTP_202_ACCEPTED)
async def refund(
    conn: ConnDep,
    caller: MerchantCaller,
    key: IdempotencyKey,
    order_id: UUID,
    body: RefundRequest,
    pool: PoolDep,
    gateways: GatewaysDep,
    iot_gateways: IotGatewaysDep,
    calendar: CalendarDep,
    background: BackgroundTasks,
) -> RefundPublic:
    """Refund a paid order whole: money back to the buyer, your revenue and the wholesale
    reversed, the data withdrawn, and a red-letter invoice issued."""
    refund, new = await orders.request_refund(
        conn,
        merchant_id=caller.tenant_id,
        order_id=order_id,
        key=ledger_key(caller, "iot-refund", key),
        reason=body.reason,
    )
    if new:
        background.add_task(
            after,
            settlement.process_refund(
                pool,
                gateways,
                iot_gateways,
                refund_id=refund.refund_id,
                calendar=calendar,
            ),
            what="iot refund",
        )
    return refund


@router.get("/orders/{order_id}/refund")
async def refund_state(conn: ConnDep, caller: MerchantCaller, order_id: UUID) -> RefundPublic:
    """Where an order's refund stands."""
    return await orders.refund_of(conn, merchant_id=caller.tenant_id, order_id=order_id)


@router.get("/buyers")
async def buyers(
    conn: ConnDep, caller: MerchantCaller, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> Page[BuyerPublic]:
    """The people who bought from you, with masked names, by their first order."""
    return await statements.buyers(conn, merchant_id=caller.tenant_id, cursor=cursor, limit=limit)


@router.get("/buyers/{buyer_id}")
async def buyer(conn: ConnDep, caller: MerchantCaller, buyer_id: UUID) -> BuyerPublic:
    """One of your buyers."""
    return await statements.buyer(conn, merchant_id=caller.tenant_id, buyer_id=buyer_id)


@router.get("/statements/{month}")
async def statement(
    conn: ConnDep,
    caller: MerchantCaller,
    month: Annotated[str, Path(pattern=r"^[0-9]{4}-(0[1-9]|1[0-2])$", description="YYYY-MM")],
    calendar: CalendarDep,
    currency: Annotated[str, Query(pattern=r"^[A-Z]{3}$")] = "CNY",
) -> StatementPublic:
    """A month's sales and refunds (in the billing time zone) with your revenue: retail −
    wholesale."""
    return await statements.statement(
        conn,
        merchant_id=caller.tenant_id,
        month=parse_period(month),
        calendar=calendar,
        currency=currency,
    )


@router.get("/invoices")
async def invoice_list(
    conn: ConnDep, caller: MerchantCaller, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> Page[InvoicePublic]:
    """Invoices of your sales and refunds, newest first."""
    return await statements.list_invoices(
        conn, merchant_id=caller.tenant_id, cursor=cursor, limit=limit
    )


@router.get("/invoices/{invoice_id}")
async def invoice(conn: ConnDep, caller: MerchantCaller, invoice_id: UUID) -> InvoicePublic:
    """An invoice as JSON."""
    return await statements.get_invoice(conn, invoice_id=invoice_id, merchant_id=caller.tenant_id)


@router.get(
    "/invoices/{invoice_id}/pdf",
    response_class=Response,
    responses=PDF_RESPONSES,
)
async def invoice_pdf(conn: ConnDep, caller: MerchantCaller, invoice_id: UUID) -> Response:
    """An invoice as a PDF."""
    pdf = await statements.invoice_pdf(conn, invoice_id=invoice_id, merchant_id=caller.tenant_id)
    return pdf_response(pdf)


@router.post("/thresholds", status_code=status.HTTP_201_CREATED)
async def add_threshold(
    conn: ConnDep, caller: MerchantCaller, body: ThresholdCreate
) -> ThresholdPublic:
    """Be alerted (a signed webhook) when a card, or a pool, crosses a share of its monthly
    quota or an amount of data: once per threshold per month."""
    return await usage.add_threshold(conn, merchant_id=caller.tenant_id, body=body)


@router.get("/thresholds")
async def list_thresholds(
    conn: ConnDep, caller: MerchantCaller, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> Page[ThresholdPublic]:
    """Your usage thresholds, oldest first."""
    return await usage.thresholds(conn, merchant_id=caller.tenant_id, cursor=cursor, limit=limit)


@router.delete("/thresholds/{threshold_id}", status_code=status.HTTP_204_NO_CONTENT)
async def remove_threshold(conn: ConnDep, caller: MerchantCaller, threshold_id: UUID) -> Response:
    """Remove a threshold (and its alerts)."""
    await usage.remove_threshold(conn, merchant_id=caller.tenant_id, threshold_id=threshold_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/usage-alerts")
async def alerts(
    conn: ConnDep, caller: MerchantCaller, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> Page[UsageAlert]:
    """Thresholds your cards crossed, newest first."""
    return await usage.usage_alerts(conn, merchant_id=caller.tenant_id, cursor=cursor, limit=limit)
