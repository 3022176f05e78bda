"""Merchants as sellers: the seller profile printed on invoices, retail prices for the
wholesale plans, and the store buyers see."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from flowbill import paging
from flowbill.db import Connection
from flowbill.paging import Page
from iot_cards import idcheck
from iot_cards.errors import (
    InvalidTaxId,
    MerchantNotFound,
    PlanNotFound,
    PlanNotOffered,
    PriceBelowWholesale,
    ProfileRequired,
)
from iot_cards.repository import inventory as plans
from iot_cards.repository import merchants as repository
from iot_cards.repository.merchants import MerchantPlanRow
from iot_cards.schemas import (
    MerchantPlanPublic,
    MerchantPlanSet,
    SellerProfile,
    StorePlan,
    StorePublic,
)
from tenants import service as tenants
from tenants.errors import TenantNotFound
from tenants.schemas import Role

PLANS_SCOPE = "iot-merchant-plans"


async def is_merchant(conn: Connection, tenant_id: UUID) -> bool:
    """Whether a tenant is an enabled merchant."""
    try:
        tenant = await tenants.get_tenant(conn, tenant_id)
    except TenantNotFound:
        return False
    return tenant.role is Role.MERCHANT and not tenant.disabled


async def set_profile(conn: Connection, *, merchant_id: UUID, body: SellerProfile) -> SellerProfile:
    """The seller's name and tax id printed on your invoices."""
    if not idcheck.valid_tax_id(body.tax_id):
        raise InvalidTaxId("the tax id is not a valid 18-character unified social credit code")
    await repository.upsert_profile(
        conn, merchant_id=merchant_id, seller_name=body.seller_name, tax_id=body.tax_id
    )
    return body


async def seller(conn: Connection, merchant_id: UUID) -> tuple[str, str] | None:
    """The merchant's seller name and tax id, or None before it set them."""
    return await repository.get_profile(conn, merchant_id)


async def set_price(
    conn: Connection, *, merchant_id: UUID, plan_id: UUID, body: MerchantPlanSet
) -> MerchantPlanPublic:
    """Your retail price for a wholesale plan (never below wholesale), pooling and sale."""
    if await repository.get_profile(conn, merchant_id) is None:
        raise ProfileRequired("PUT /v1/merchant/iot/profile with your seller name and tax id")
    plan = await plans.get_plan(conn, plan_id, lock=True)
    if plan is None:
        raise PlanNotFound(f"no plan {plan_id}")
    if body.retail_minor < plan.wholesale_minor:
        raise PriceBelowWholesale(
            f"the wholesale price of this plan is {plan.wholesale_minor} {plan.currency} minor"
            " units",
            wholesale_minor=plan.wholesale_minor,
        )
    await repository.upsert_merchant_plan(
        conn,
        merchant_id=merchant_id,
        plan_id=plan_id,
        retail_minor=body.retail_minor,
        pooled=body.pooled,
        on_sale=body.on_sale,
    )
    row = await repository.merchant_plan(conn, merchant_id, plan_id)
    assert row is not None
    return MerchantPlanPublic.model_validate(row)


async def merchant_plans(
    conn: Connection, *, merchant_id: UUID, cursor: str | None, limit: int
) -> Page[MerchantPlanPublic]:
    """One page of your plans with their retail and wholesale prices, oldest plan first."""
    after = (
        None
        if cursor is None
        else paging.decode_cursor(cursor, (datetime, UUID), scope=PLANS_SCOPE)
    )
    rows = await repository.merchant_plans(conn, merchant_id, after=after, limit=limit)
    found = paging.page(
        rows, limit=limit, key=lambda r: (r.created_at, r.plan_id), scope=PLANS_SCOPE
    )
    return Page[MerchantPlanPublic].model_validate(found, from_attributes=True)


async def offered(conn: Connection, merchant_id: UUID, plan_id: UUID) -> MerchantPlanRow:
    """The merchant's plan as it sells it now; refused when it does not sell it."""
    plan = await repository.merchant_plan(conn, merchant_id, plan_id)
    if plan is None or not plan.on_sale:
        raise PlanNotOffered(f"the merchant does not sell plan {plan_id}")
    return plan


async def store(conn: Connection, *, merchant_id: UUID) -> StorePublic:
    """A merchant's store as buyers see it: plans on sale at retail, and cards in stock."""
    profile = await repository.get_profile(conn, merchant_id)
    if profile is None or not await is_merchant(conn, merchant_id):
        raise MerchantNotFound(f"no store {merchant_id}")
    return StorePublic(
        merchant_id=merchant_id,
        seller_name=profile[0],
        cards_in_stock=await repository.stock_count(conn, merchant_id),
        plans=[
            StorePlan.model_validate(p) for p in await repository.plans_on_sale(conn, merchant_id)
        ],
    )
