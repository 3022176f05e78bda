"""The one place that gathers every audience's router.

Routers are grouped by audience, one sub-package each: `driver/`, `sponsor/`, `merchant/`,
`partner/`, `app/`, `operator/`, `tenant/` (what every tenant has), and `callbacks/` (the
outside parties' signed late answers). No audience's router imports another's; what they share
lives in `api.deps`, `api.params` and `api.responses`.
"""

from __future__ import annotations

from fastapi import APIRouter

from api.routers import health
from api.routers.app import check_ins
from api.routers.callbacks import iot_cards as iot_callbacks
from api.routers.callbacks import wallet as wallet_callbacks
from api.routers.driver import iot_cards as driver_iot_cards
from api.routers.driver import pages as driver_pages
from api.routers.driver import sign_in, wallet
from api.routers.driver import statements as driver_statements
from api.routers.driver import vehicles as driver_vehicles
from api.routers.merchant import devices as merchant_devices
from api.routers.merchant import iot_cards as merchant_iot_cards
from api.routers.merchant import promotions
from api.routers.operator import billing as operator_billing
from api.routers.operator import devices as operator_devices
from api.routers.operator import iot_cards as operator_iot_cards
from api.routers.operator import sponsors as operator_sponsors
from api.routers.operator import tenants as operator_tenants
from api.routers.operator import wallet as operator_wallet
from api.routers.partner import events
from api.routers.sponsor import devices as sponsor_devices
from api.routers.sponsor import policies
from api.routers.sponsor import statements as sponsor_statements
from api.routers.tenant import me, webhooks

# A request is matched router by router and route by route until one fits (FastAPI has no
# shortcut by prefix), so the busiest audiences come first: drivers' wallets (redemptions),
# partners' action events and check-ins; then the rest. Their paths never overlap, so the
# order changes nothing else but the order of the API docs.
ROUTERS: list[APIRouter] = [
    health.router,
    wallet.router,
    events.router,
    check_ins.router,
    me.router,
    operator_tenants.router,
    operator_wallet.router,
    promotions.router,
    policies.router,
    operator_sponsors.router,
    driver_vehicles.router,
    sponsor_statements.router,
    operator_billing.router,
    driver_statements.router,
    wallet_callbacks.router,
    webhooks.router,
    operator_iot_cards.router,
    merchant_iot_cards.router,
    driver_iot_cards.router,
    iot_callbacks.router,
    sign_in.api_router,
    sign_in.router,
    driver_pages.router,
    operator_devices.router,
    sponsor_devices.router,
    merchant_devices.router,
]
