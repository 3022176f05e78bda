"""The one place that gathers every audience's router."""

from __future__ import annotations

from fastapi import APIRouter

from api.routers import (
    check_in,
    driver,
    driver_pages,
    driver_statements,
    gateway_callbacks,
    health,
    iot_buyer,
    iot_callbacks,
    iot_merchant,
    iot_operator,
    me,
    merchant,
    operator,
    operator_billing,
    operator_sponsors,
    operator_wallet,
    partner,
    sign_in,
    sponsor,
    sponsor_statements,
    wallet,
    webhooks,
)

# A request is matched router by router and route by route until one fits (FastAPI has no
# shortcut by prefix), so the busiest audiences come first: drivers' wallets (redemptions),
# partners' action events and check-ins; then the rest. Their paths never overlap, so the
# order changes nothing else but the order of the API docs.
ROUTERS: list[APIRouter] = [
    health.router,
    wallet.router,
    partner.router,
    check_in.router,
    me.router,
    operator.router,
    operator_wallet.router,
    merchant.router,
    sponsor.router,
    operator_sponsors.router,
    driver.router,
    sponsor_statements.router,
    operator_billing.router,
    driver_statements.router,
    gateway_callbacks.router,
    webhooks.router,
    iot_operator.router,
    iot_merchant.router,
    iot_buyer.router,
    iot_callbacks.router,
    sign_in.api_router,
    sign_in.router,
    driver_pages.router,
]
