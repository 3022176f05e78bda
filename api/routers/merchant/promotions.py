"""Merchants: buy data for the promotion pool, run campaigns, choose partner platforms, see
who used the data they paid for, and fulfil orders of their goods in the exchange."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID

from fastapi import APIRouter, BackgroundTasks, Response, status

from api.deps import (
    ConnDep,
    GatewaysDep,
    IdempotencyKey,
    MerchantCaller,
    PoolDep,
    SettingsDep,
    after_response,
    ledger_key,
    providers,
)
from api.params import Cursor, Limit
from flowbill.paging import DEFAULT_LIMIT, Page
from tenants import service as tenants
from tenants.errors import TenantNotFound
from tenants.schemas import Role
from wallet import exchange, promotions, reports
from wallet.schemas import (
    CampaignCreate,
    CampaignPublic,
    DataPurchase,
    DataPurchased,
    ExchangeOrderPublic,
    FulfilmentReport,
    MerchantDataUse,
    PoolPublic,
)

router = APIRouter(prefix="/v1/merchant", tags=["merchant"])


@router.post("/data-purchases", status_code=status.HTTP_201_CREATED)
async def buy_data(
    conn: ConnDep, caller: MerchantCaller, key: IdempotencyKey, body: DataPurchase
) -> DataPurchased:
    """Buy data for your promotion pool at the platform's current price per 100 MB."""
    return await promotions.buy_data(
        conn, key=ledger_key(caller, "data-purchase", key), merchant_id=caller.tenant_id,
        mb=body.mb, currency=body.currency,
    )  # fmt: skip


@router.get("/pool")
async def pool(conn: ConnDep, caller: MerchantCaller) -> PoolPublic:
    """Data in your pool, and what your campaigns still hold."""
    return await promotions.pool(conn, merchant_id=caller.tenant_id)


@router.post("/campaigns", status_code=status.HTTP_201_CREATED)
async def create_campaign(
    conn: ConnDep, caller: MerchantCaller, key: IdempotencyKey, body: CampaignCreate
) -> CampaignPublic:
    """Start a campaign: its budget moves from your pool and returns when it ends."""
    return await promotions.create_campaign(
        conn, key=ledger_key(caller, "campaign", key), merchant_id=caller.tenant_id, spec=body,
        now=datetime.now(UTC),
    )  # fmt: skip


@router.get("/campaigns")
async def list_campaigns(
    conn: ConnDep, caller: MerchantCaller, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> Page[CampaignPublic]:
    """Your campaigns, oldest first, with the budget left."""
    return await promotions.list_campaigns(
        conn, merchant_id=caller.tenant_id, now=datetime.now(UTC), limit=limit, cursor=cursor
    )


@router.get("/campaigns/{campaign_id}")
async def get_campaign(conn: ConnDep, caller: MerchantCaller, campaign_id: UUID) -> CampaignPublic:
    """One of your campaigns."""
    return await promotions.get_campaign(
        conn, merchant_id=caller.tenant_id, campaign_id=campaign_id, now=datetime.now(UTC)
    )


@router.post("/campaigns/{campaign_id}/end")
async def end_campaign(conn: ConnDep, caller: MerchantCaller, campaign_id: UUID) -> CampaignPublic:
    """End a campaign now; its unspent budget returns to your pool. Ending twice is harmless."""
    return await promotions.end_campaign(
        conn, merchant_id=caller.tenant_id, campaign_id=campaign_id, now=datetime.now(UTC)
    )


@router.put("/partners/{partner_id}", status_code=status.HTTP_204_NO_CONTENT)
async def allow_partner(conn: ConnDep, caller: MerchantCaller, partner_id: UUID) -> Response:
    """Let a partner platform send action events for your campaigns."""
    partner = await tenants.get_tenant(conn, partner_id)
    if partner.role is not Role.PARTNER or partner.disabled:
        raise TenantNotFound(f"no partner platform {partner_id}")
    await promotions.allow_partner(conn, merchant_id=caller.tenant_id, partner_id=partner_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.delete("/partners/{partner_id}", status_code=status.HTTP_204_NO_CONTENT)
async def revoke_partner(conn: ConnDep, caller: MerchantCaller, partner_id: UUID) -> Response:
    """Stop a partner platform from acting for you."""
    await promotions.revoke_partner(conn, merchant_id=caller.tenant_id, partner_id=partner_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/data-use")
async def data_use(
    conn: ConnDep, caller: MerchantCaller, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> Page[MerchantDataUse]:
    """Who received your data, by user, and how much of it they used, let expire, or still
    hold."""
    return await reports.merchant_data_use(
        conn, merchant_id=caller.tenant_id, limit=limit, cursor=cursor
    )


@router.get("/exchange-orders")
async def exchange_orders(
    conn: ConnDep, caller: MerchantCaller, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> Page[ExchangeOrderPublic]:
    """Orders for your goods in the exchange, newest first."""
    return await exchange.orders(conn, merchant_id=caller.tenant_id, limit=limit, cursor=cursor)


@router.post("/exchange-orders/{order_id}/fulfilment")
async def report_fulfilment(
    conn: ConnDep,
    pool: PoolDep,
    gateways: GatewaysDep,
    settings: SettingsDep,
    caller: MerchantCaller,
    order_id: UUID,
    body: FulfilmentReport,
    background: BackgroundTasks,
) -> ExchangeOrderPublic:
    """Report that you shipped an order of your goods, or that you cannot (the user is then
    refunded: data to their lots, the money part through the payment provider)."""
    order = await exchange.merchant_fulfils(
        conn, merchant_id=caller.tenant_id, order_id=order_id, delivered=body.delivered,
        note=body.note, now=datetime.now(UTC),
    )  # fmt: skip
    if order.state == "failed":
        background.add_task(
            after_response,
            exchange.refund_money(pool, providers(settings, gateways), order_id=order_id),
            what="exchange refund",
        )
    return order
