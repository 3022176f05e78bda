"""Card holders (drivers' role): buy a card from a merchant's store, verify their real name,
activate the card on its device, recharge it, and see its usage, orders and invoices."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, BackgroundTasks, Path, Query, Response, status
from psycopg_pool import AsyncConnectionPool

from api.deps import (
    IDENTITY_PATH,
    PAYMENTS_PATH,
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
from flowbill.db import Connection
from flowbill.settings import Settings
from iot_cards import service, settlement
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
from wallet.gateways import HttpGateways

router = APIRouter(prefix="/v1/iot", tags=["iot cards: holders"])

Iccid = Annotated[str, Path(pattern=r"^[0-9]{19,20}$", description="The card's ICCID.")]
Limit = Annotated[int, Query(ge=1, le=500)]


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
    )
    background.add_task(after_response, work, what="iot order")


@router.get("/stores/{merchant_id}")
async def store(conn: ConnDep, _: DriverCaller, merchant_id: UUID) -> StorePublic:
    """A merchant's store: its plans at retail price and how many cards it has in stock."""
    return await service.store(conn, merchant_id=merchant_id)


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
    order, new = await service.purchase(
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
async def my_orders(conn: ConnDep, caller: DriverCaller, limit: Limit = 100) -> list[OrderPublic]:
    """Your orders, newest first."""
    rows = await service.orders(conn, buyer_id=caller.tenant_id, limit=limit)
    return [
        await service.buyer_order(conn, order_id=r.order_id, buyer_id=caller.tenant_id)
        for r in rows
    ]


@router.get("/orders/{order_id}")
async def my_order(conn: ConnDep, caller: DriverCaller, order_id: UUID) -> OrderPublic:
    """One of your orders."""
    return await service.buyer_order(conn, order_id=order_id, buyer_id=caller.tenant_id)


@router.get("/cards")
async def my_cards(conn: ConnDep, caller: DriverCaller, limit: Limit = 100) -> list[CardPublic]:
    """Your cards."""
    return await service.list_cards(conn, holder_id=caller.tenant_id, limit=limit)


@router.get("/cards/{iccid}")
async def my_card(conn: ConnDep, caller: DriverCaller, iccid: Iccid) -> CardDetail:
    """A card: its state, history, verification and the commands you may give it."""
    return await service.card_detail(conn, iccid=iccid, holder_id=caller.tenant_id)


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
    background: BackgroundTasks,
) -> VerificationPublic:
    """Verify your real name for a paid card (required by law before it can work): name,
    resident ID number and phone. The answer comes shortly: poll the verification. Only
    masked forms are kept; the ID number is kept as a keyed hash. One ID number may hold
    at most 10 cards across all merchants."""
    verification, request = await service.submit_verification(
        conn,
        iccid=iccid,
        holder_id=caller.tenant_id,
        key=ledger_key(caller, "iot-verification", key),
        body=body,
        hash_key=settings.iot_id_hash_key.get_secret_value().encode(),
        now=datetime.now(UTC),
    )
    if request is not None:
        background.add_task(
            after_response,
            settlement.submit_identity_check(
                pool, iot_gateways, request, callback_url=iot_callback_url(settings, IDENTITY_PATH)
            ),
            what="identity check",
        )
    return verification


@router.get("/cards/{iccid}/verification")
async def verification(conn: ConnDep, caller: DriverCaller, iccid: Iccid) -> VerificationPublic:
    """Where your card's latest verification stands."""
    return await service.verification_of(conn, iccid=iccid, holder_id=caller.tenant_id)


@router.post("/cards/{iccid}/activation")
async def activate(
    conn: ConnDep, caller: DriverCaller, key: IdempotencyKey, iccid: Iccid, body: ImeiBody
) -> CardDetail:
    """Activate your verified card in its device; the card is bound to this IMEI."""
    return await service.activate(
        conn,
        iccid=iccid,
        actor=Actor.HOLDER,
        caller_id=caller.tenant_id,
        key=ledger_key(caller, "iot-card", key),
        imei=body.imei,
        now=datetime.now(UTC),
    )


@router.post("/cards/{iccid}/commands")
async def command(
    conn: ConnDep, caller: DriverCaller, key: IdempotencyKey, iccid: Iccid, body: CardCommand
) -> CardDetail:
    """Suspend or resume your card (now, at an earlier time, or scheduled). A card the
    merchant suspended is resumed by the merchant only."""
    return await service.command(
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
    return await service.report_imei(
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
    order, new = await service.recharge(
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
async def usage(conn: ConnDep, caller: DriverCaller, iccid: Iccid) -> UsagePublic:
    """Your card's data use this month against its plan, per app, from the metered data."""
    return await service.card_usage(
        conn, iccid=iccid, holder_id=caller.tenant_id, now=datetime.now(UTC)
    )


@router.get("/invoices")
async def my_invoices(
    conn: ConnDep, caller: DriverCaller, limit: Limit = 100
) -> list[InvoicePublic]:
    """Your electronic invoices, newest first."""
    return await service.list_invoices(conn, buyer_id=caller.tenant_id, limit=limit)


@router.get("/invoices/{invoice_id}")
async def my_invoice(conn: ConnDep, caller: DriverCaller, invoice_id: UUID) -> InvoicePublic:
    """An invoice as JSON."""
    row = await service.get_invoice(conn, invoice_id=invoice_id, buyer_id=caller.tenant_id)
    return service.invoice_public(row)


@router.get(
    "/invoices/{invoice_id}/pdf",
    response_class=Response,
    responses={200: {"content": {"application/pdf": {}}}},
)
async def my_invoice_pdf(conn: ConnDep, caller: DriverCaller, invoice_id: UUID) -> Response:
    """An invoice as a PDF."""
    pdf = await service.invoice_pdf(conn, invoice_id=invoice_id, buyer_id=caller.tenant_id)
    return Response(pdf, media_type="application/pdf")
