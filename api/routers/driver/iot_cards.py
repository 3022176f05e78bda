"""Card holders (drivers' role): buy a card from a merchant's store, verify their real name,
activate the card on its device, recharge it, and see its usage, orders and invoices."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, BackgroundTasks, Path, Response, status
from psycopg_pool import AsyncConnectionPool

from api.deps import (
    IDENTITY_PATH,
    PAYMENTS_PATH,
    CalendarDep,
    ConnDep,
    DriverCaller,
    GatewaysDep,
    IdempotencyKey,
    IotGatewaysDep,
    PoolDep,
    SettingsDep,
    after_response,
    iot_callback_url,
    ledger_key,
)
from api.params import Cursor, Limit
from api.responses import PDF_RESPONSES, pdf_response
from flowbill.db import Connection
from flowbill.paging import DEFAULT_LIMIT, Page
from flowbill.periods import Calendar
from flowbill.settings import Settings
from iot_cards import settlement
from iot_cards.gateways import HttpIotGateways
from iot_cards.lifecycle import Actor
from iot_cards.schemas import (
    CardCommand,
    CardDetail,
    CardPublic,
    ImeiBody,
    InvoicePublic,
    OrderPublic,
    PurchaseCreate,
    RechargeCreate,
    StorePublic,
    UsagePublic,
    VerificationPublic,
    VerificationRequest,
)
from iot_cards.service import (
    cards,
    commands,
    devices,
    merchants,
    orders,
    statements,
    usage,
    verification,
)
from wallet.gateways import HttpGateways

router = APIRouter(prefix="/v1/iot", tags=["iot cards: holders"])

Iccid = Annotated[str, Path(pattern=r"^[0-9]{19,20}$", description="The card's ICCID.")]


def _pay_after_response(
    background: BackgroundTasks,
    pool: AsyncConnectionPool[Connection],
    gateways: HttpGateways,
    iot_gateways: HttpIotGateways,
    settings: Settings,
    order: OrderPublic,
) -> None:
    """Charge a new order once its transaction is committed (and the response sent)."""
    work = settlement.process_order(
        pool,
        gateways,
        iot_gateways,
        order_id=order.order_id,
        callback_url=iot_callback_url(settings, PAYMENTS_PATH),
        calendar=Calendar.from_settings(settings),
    )
    background.add_task(after_response, work, what="iot order")


@router.get("/stores/{merchant_id}")
async def store(conn: ConnDep, _: DriverCaller, merchant_id: UUID) -> StorePublic:
    """A merchant's store: its plans at retail price and how many cards it has in stock."""
    return await merchants.store(conn, merchant_id=merchant_id)


@router.post("/orders", status_code=status.HTTP_202_ACCEPTED)
async def buy(
    conn: ConnDep,
    caller: DriverCaller,
    key: IdempotencyKey,
    body: PurchaseCreate,
    pool: PoolDep,
    gateways: GatewaysDep,
    iot_gateways: IotGatewaysDep,
    settings: SettingsDep,
    background: BackgroundTasks,
) -> OrderPublic:
    """Buy a card with a monthly plan from a merchant's store. The card is yours at once;
    the payment is taken next (poll the order until it is `paid` or `failed`)."""
    order, new = await orders.purchase(
        conn,
        buyer_id=caller.tenant_id,
        key=ledger_key(caller, "iot-order", key),
        body=body,
        now=datetime.now(UTC),
    )
    if new:
        _pay_after_response(background, pool, gateways, iot_gateways, settings, order)
    return order


@router.get("/orders")
async def my_orders(
    conn: ConnDep, caller: DriverCaller, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> Page[OrderPublic]:
    """Your orders, newest first."""
    return await orders.buyer_orders(conn, buyer_id=caller.tenant_id, cursor=cursor, limit=limit)


@router.get("/orders/{order_id}")
async def my_order(conn: ConnDep, caller: DriverCaller, order_id: UUID) -> OrderPublic:
    """One of your orders."""
    return await orders.buyer_order(conn, order_id=order_id, buyer_id=caller.tenant_id)


@router.get("/cards")
async def my_cards(
    conn: ConnDep, caller: DriverCaller, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> Page[CardPublic]:
    """Your cards in ICCID order."""
    return await cards.list_cards(conn, holder_id=caller.tenant_id, cursor=cursor, limit=limit)


@router.get("/cards/{iccid}")
async def my_card(conn: ConnDep, caller: DriverCaller, iccid: Iccid) -> CardDetail:
    """A card: its state, history, verification and the commands you may give it."""
    return await cards.card_detail(conn, iccid=iccid, holder_id=caller.tenant_id)


@router.post("/cards/{iccid}/verification", status_code=status.HTTP_202_ACCEPTED)
async def verify(
    conn: ConnDep,
    caller: DriverCaller,
    key: IdempotencyKey,
    iccid: Iccid,
    body: VerificationRequest,
    pool: PoolDep,
    iot_gateways: IotGatewaysDep,
    settings: SettingsDep,
    calendar: CalendarDep,
    background: BackgroundTasks,
) -> VerificationPublic:
    """Verify your real name for a paid card (required by law before it can work): name,
    resident ID number and phone. The answer comes shortly: poll the verification. Only
    masked forms are kept; the ID number is kept as a keyed hash. One ID number may hold
    at most 10 cards across all merchants."""
    submitted, request = await verification.submit_verification(
        conn,
        iccid=iccid,
        holder_id=caller.tenant_id,
        key=ledger_key(caller, "iot-verification", key),
        body=body,
        hash_key=settings.iot_id_hash_key.get_secret_value().encode(),
        now=datetime.now(UTC),
        calendar=calendar,
    )
    if request is not None:
        background.add_task(
            after_response,
            settlement.submit_identity_check(
                pool, iot_gateways, request, callback_url=iot_callback_url(settings, IDENTITY_PATH)
            ),
            what="identity check",
        )
    return submitted


@router.get("/cards/{iccid}/verification")
async def verification_state(
    conn: ConnDep, caller: DriverCaller, iccid: Iccid
) -> VerificationPublic:
    """Where your card's latest verification stands."""
    return await verification.verification_of(conn, iccid=iccid, holder_id=caller.tenant_id)


@router.post("/cards/{iccid}/activation")
async def activate(
    conn: ConnDep,
    caller: DriverCaller,
    key: IdempotencyKey,
    iccid: Iccid,
    body: ImeiBody,
    calendar: CalendarDep,
) -> CardDetail:
    """Activate your verified card in its device; the card is bound to this IMEI."""
    return await devices.activate(
        conn,
        iccid=iccid,
        actor=Actor.HOLDER,
        caller_id=caller.tenant_id,
        key=ledger_key(caller, "iot-card", key),
        imei=body.imei,
        now=datetime.now(UTC),
        calendar=calendar,
    )


@router.post("/cards/{iccid}/commands")
async def command(
    conn: ConnDep, caller: DriverCaller, key: IdempotencyKey, iccid: Iccid, body: CardCommand
) -> CardDetail:
    """Suspend or resume your card (now, at an earlier time, or scheduled). A card the
    merchant suspended is resumed by the merchant only."""
    return await commands.command(
        conn,
        iccid=iccid,
        actor=Actor.HOLDER,
        caller_id=caller.tenant_id,
        key=ledger_key(caller, "iot-card", key),
        body=body,
        now=datetime.now(UTC),
    )


@router.post("/cards/{iccid}/device-reports")
async def device_report(
    conn: ConnDep, caller: DriverCaller, iccid: Iccid, body: ImeiBody
) -> CardDetail:
    """Report the IMEI of the device the card is in now (the device platform calls this at
    every attach): another device than the bound one blocks the card until it is back."""
    return await devices.report_imei(
        conn,
        iccid=iccid,
        actor=Actor.HOLDER,
        caller_id=caller.tenant_id,
        imei=body.imei,
        now=datetime.now(UTC),
    )


@router.post("/cards/{iccid}/recharges", status_code=status.HTTP_202_ACCEPTED)
async def recharge(
    conn: ConnDep,
    caller: DriverCaller,
    key: IdempotencyKey,
    iccid: Iccid,
    body: RechargeCreate,
    pool: PoolDep,
    gateways: GatewaysDep,
    iot_gateways: IotGatewaysDep,
    settings: SettingsDep,
    background: BackgroundTasks,
) -> OrderPublic:
    """Recharge your card: a monthly plan renews it after its current term, a top-up adds
    data to this month. A card blocked for lack of data unblocks once paid."""
    order, new = await orders.recharge(
        conn,
        buyer_id=caller.tenant_id,
        iccid=iccid,
        key=ledger_key(caller, "iot-order", key),
        body=body,
        now=datetime.now(UTC),
    )
    if new:
        _pay_after_response(background, pool, gateways, iot_gateways, settings, order)
    return order


@router.get("/cards/{iccid}/usage")
async def card_usage(
    conn: ConnDep, caller: DriverCaller, iccid: Iccid, calendar: CalendarDep
) -> UsagePublic:
    """Your card's data use this month against its plan, per app, from the metered data."""
    return await usage.card_usage(
        conn,
        iccid=iccid,
        holder_id=caller.tenant_id,
        now=datetime.now(UTC),
        calendar=calendar,
    )


@router.get("/invoices")
async def my_invoices(
    conn: ConnDep, caller: DriverCaller, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> Page[InvoicePublic]:
    """Your electronic invoices, newest first."""
    return await statements.list_invoices(
        conn, buyer_id=caller.tenant_id, cursor=cursor, limit=limit
    )


@router.get("/invoices/{invoice_id}")
async def my_invoice(conn: ConnDep, caller: DriverCaller, invoice_id: UUID) -> InvoicePublic:
    """An invoice as JSON."""
    return await statements.get_invoice(conn, invoice_id=invoice_id, buyer_id=caller.tenant_id)


@router.get(
    "/invoices/{invoice_id}/pdf",
    response_class=Response,
    responses=PDF_RESPONSES,
)
async def my_invoice_pdf(conn: ConnDep, caller: DriverCaller, invoice_id: UUID) -> Response:
    """An invoice as a PDF."""
    pdf = await statements.invoice_pdf(conn, invoice_id=invoice_id, buyer_id=caller.tenant_id)
    return pdf_response(pdf)
