"""The cross-tenant sweep, generated from the route table: for every route that takes an id in
its path and admits a tenant role, tenant B of that role calling it with tenant A's ids gets a
404 problem and changes nothing. A new route with a path parameter fails
`test_every_route_with_an_id_is_swept_or_listed` until someone decides how it is swept, or
lists it below with the reason."""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any
from uuid import UUID

import httpx
import psycopg
import pytest
from fastapi.routing import APIRoute

from flowbill import db
from flowbill.settings import Settings
from flowbill.units import MB
from tenants.schemas import Role
from tests.billing import statement_factories
from tests.conftest import assert_problem, bearer, make_tenant, new_iccid
from tests.iot_cards.factories import Store, active_card, behave_iot, new_imei, person, poll
from tests.security.test_role_sweep import _admitted, _routes
from tests.sponsors.factories import fit_vehicle
from tests.wallet.factories import (
    Shop,
    behave,
    carrier,
    funded_driver,
    idem,
    placed_transfer_in,
    settled,
)
from wallet import service as wallet

# Routes with a path parameter that the sweep does not call, and why.
NOT_SWEPT = {
    # Only a period or a month: the caller's own statement by construction, no id of another's.
    "/v1/sponsor/statements/{period}": "only a period: the caller's own statement",
    "/v1/sponsor/statements/{period}.csv": "only a period: the caller's own statement",
    "/v1/driver/statements/{period}": "only a period: the caller's own statement",
    "/v1/merchant/iot/statements/{month}": "only a month: the caller's own statement",
    # Ids that name another tenant the caller links to, not a thing of A's: B may link A's
    # partner for itself, by design.
    "/v1/sponsor/partners/{sponsor_id}": "names a partner to grant, not A's thing",
    "/v1/merchant/partners/{partner_id}": "names a partner to link, not A's thing",
    "/v1/iot/stores/{merchant_id}": "a merchant's public store front, open to every driver",
    "/v1/merchant/iot/plans/{plan_id}": "the operator's wholesale plan, priced by every merchant",
}
OPERATOR_ONLY = "operator routes are platform-wide by design"
# Swept routes that refuse B with another problem than 404, and why that is right; nothing may
# change all the same.
REFUSED_OTHERWISE = {
    # A PUT registers the vehicle: a VIN is a car's public plate number (on the windscreen),
    # one car, so registering another automaker's is a conflict, not a missing thing.
    ("PUT", "/v1/sponsor/vehicles/{vin}"): (409, "vehicle-of-another-automaker"),
}
# GET routes whose thing A has none of in the sweep's world, and why (B's 404 is then checked
# against the ownership test that comes first in the endpoint).
HOLDER_SEES_NOTHING = {
    "/v1/sponsor/sims/{iccid}/coverage": "coverage is computed by a billing run",
    "/v1/merchant/iot/orders/{order_id}/refund": "no refund was asked for",
}
# Required query parameters, filled with a harmless valid value: the route is judged on its ids.
QUERY = {"period": f"{datetime.now(UTC):%Y-%m}"}

# Known-good bodies: FastAPI validates a body before the endpoint runs, so `{}` would answer 422
# before any ownership check. Each is built from the world (A's values where a body names them).
Body = Callable[["World", Role], dict[str, Any]]
BODIES: dict[str, Body] = {
    "/v1/wallet/transfers-in/{order_id}/confirmation": lambda w, role: {"code": w.transfer_in_code},
    "/v1/wallet/exchange-orders/{order_id}/returns": lambda w, role: {"quantity": 1},
    "/v1/merchant/exchange-orders/{order_id}/fulfilment": lambda w, role: {"delivered": True},
    "/v1/sponsor/vehicles/{vin}": lambda w, role: {"model": "Taken", "iccids": []},
    "/v1/sponsor/policies/{policy_id}/terms": lambda w, role: {
        "scope": {"kind": "automaker", "automaker_id": w.ids["automaker_id"]},
        "categories": ["telematics"],
        "unit_price": "0.50",
    },
    "/v1/webhooks/endpoints/{endpoint_id}": lambda w, role: {
        "description": "taken",
        "enabled": True,
    },
    "/v1/webhooks/endpoints/{endpoint_id}/replay-failed": lambda w, role: {
        "since": "2020-01-01T00:00:00Z"
    },
    "/v1/webhooks/messages/{msg_id}/replay": lambda w, role: {
        "endpoint_id": w.ids[BY_NAME.get((role, "endpoint_id"), "endpoint_id")]
    },
    "/v1/merchant/iot/cards/{iccid}/commands": lambda w, role: {"command": "suspend"},
    "/v1/merchant/iot/cards/{iccid}/activation": lambda w, role: {"imei": new_imei()},
    "/v1/merchant/iot/cards/{iccid}/device-reports": lambda w, role: {"imei": new_imei()},
    "/v1/merchant/iot/orders/{order_id}/refunds": lambda w, role: {"reason": "taken"},
    "/v1/iot/cards/{iccid}/verification": lambda w, role: person(),
    "/v1/iot/cards/{iccid}/activation": lambda w, role: {"imei": new_imei()},
    "/v1/iot/cards/{iccid}/commands": lambda w, role: {"command": "suspend"},
    "/v1/iot/cards/{iccid}/device-reports": lambda w, role: {"imei": new_imei()},
    "/v1/iot/cards/{iccid}/recharges": lambda w, role: {"plan_id": w.ids["plan_id"]},
    "/v1/sponsor/sims/{iccid}/device-credentials": lambda w, role: {"kind": "password"},
    "/v1/sponsor/sims/{iccid}/device-credentials/rotate": lambda w, role: {"kind": "password"},
    "/v1/merchant/sims/{iccid}/device-credentials": lambda w, role: {"kind": "password"},
    "/v1/merchant/sims/{iccid}/device-credentials/rotate": lambda w, role: {"kind": "password"},
}

# Which of A's ids fills a path parameter: by role and name, unless the route says otherwise.
BY_NAME: dict[tuple[Role, str], str] = {
    (Role.SPONSOR, "vin"): "vin",
    (Role.SPONSOR, "iccid"): "iccid",
    (Role.SPONSOR, "policy_id"): "policy_id",
    (Role.SPONSOR, "number"): "invoice_number",
    (Role.SPONSOR, "line_id"): "line_id",
    # A period names the caller's own month; the one of A's billed line, so the line is A's.
    (Role.SPONSOR, "period"): "billed_period",
    (Role.MERCHANT, "campaign_id"): "campaign_id",
    (Role.MERCHANT, "iccid"): "card_iccid",
    (Role.MERCHANT, "order_id"): "iot_order_id",
    (Role.MERCHANT, "buyer_id"): "driver_id",
    (Role.MERCHANT, "invoice_id"): "merchant_invoice_id",
    (Role.MERCHANT, "threshold_id"): "threshold_id",
    (Role.DRIVER, "iccid"): "card_iccid",
    (Role.DRIVER, "invoice_id"): "holder_invoice_id",
    (Role.DRIVER, "vin"): "vin",
    (Role.MERCHANT, "endpoint_id"): "merchant_endpoint_id",
    (Role.MERCHANT, "msg_id"): "merchant_msg_id",
}
BY_ROUTE: dict[tuple[str, str], str] = {
    ("/v1/wallet/transfers-in/{order_id}/confirmation", "order_id"): "transfer_in_id",
    ("/v1/wallet/carrier-orders/{order_id}", "order_id"): "carrier_order_id",
    ("/v1/wallet/exchange-orders/{order_id}", "order_id"): "exchange_order_id",
    ("/v1/wallet/exchange-orders/{order_id}/returns", "order_id"): "exchange_order_id",
    ("/v1/merchant/exchange-orders/{order_id}/fulfilment", "order_id"): "exchange_order_id",
    ("/v1/iot/orders/{order_id}", "order_id"): "iot_order_id",
    ("/v1/sponsor/credit-notes/{number}", "number"): "credit_note_number",
    ("/v1/driver/vehicle-invitations/{vin}/accept", "vin"): "invited_vin",
    ("/v1/driver/vehicle-invitations/{vin}/decline", "vin"): "invited_vin",
}
# Every tenant's own things, whatever its role.
ANY_ROLE = {"endpoint_id": "endpoint_id", "msg_id": "msg_id", "key_id": "key_id"}

# Tables holding money, data, ownership, states and keys. Left out: `web_sessions` (a request
# stamps `last_used_at`; `api_keys` are watched without that column), and the usage tables the
# session's ingest workers write at any time (`usage_*`, `sim_boots`, `ingest_rejects`). Each is
# compared only on the rows that mention one of the sweep's tenants or A's ids, so other tests'
# work in the shared database does not count; ledger entries name accounts, not tenants, so the
# ledger is watched through its accounts' cached balances, the lots and `check_books`.
WATCHED = (
    "tenants", "ledger_accounts", "ledger_transactions", "wallet_lots", "wallet_draws",
    "campaigns", "campaign_rewards", "carrier_orders", "exchange_orders",
    "exchange_order_events", "exchange_returns", "vehicles", "vehicle_sims", "vehicle_drivers",
    "sims", "sim_owners", "policies", "policy_terms", "sponsor_partnerships", "partner_links",
    "iot_cards", "iot_card_history", "iot_card_grants", "iot_orders", "iot_refunds",
    "iot_verifications", "iot_invoices", "iot_usage_thresholds", "webhook_endpoints",
    "webhook_messages", "invoices", "credit_notes", "api_keys", "device_credentials",
)  # fmt: skip
# The columns watched where a legitimate read writes another one.
WATCHED_COLUMNS = {"api_keys": "key_id, tenant_id, secret_sha256, label, created_at, revoked_at"}


@dataclass
class World:
    """Tenant A's things, one of each, and tenant B of each role with nothing."""

    ids: dict[str, str] = field(default_factory=dict)
    # A's API key id, per role.
    keys: dict[Role, str] = field(default_factory=dict)
    # Who holds each id (its headers): A reads each of its things, so a 404 to B means something.
    holders: dict[tuple[Role, str], dict[str, str]] = field(default_factory=dict)
    strangers: dict[Role, dict[str, str]] = field(default_factory=dict)
    # Every tenant of the sweep, A's and B's: the rows that mention one are watched.
    tenants: list[str] = field(default_factory=list)
    transfer_in_code: str = ""

    def value(self, route: APIRoute, role: Role, name: str) -> str:
        if name == "key_id":
            return self.keys[role]
        return self.ids[self._id_name(route, role, name)]

    def holder(self, route: APIRoute, role: Role) -> dict[str, str]:
        """Tenant A's headers for the route: the holder of its (first) id."""
        name = route.dependant.path_params[0].name
        if name == "key_id":
            return self.holders[role, name]
        return self.holders[role, self._id_name(route, role, name)]

    def _id_name(self, route: APIRoute, role: Role, name: str) -> str:
        found = self.id_name(route, role, name)
        assert found is not None, f"no id of A's for {{{name}}} in {route.path}"
        return found

    @staticmethod
    def id_name(route: APIRoute, role: Role, name: str) -> str | None:
        """The name of A's id that fills the path parameter, if the sweep knows one."""
        return BY_ROUTE.get((route.path, name)) or BY_NAME.get((role, name)) or ANY_ROLE.get(name)


def _has_ids(route: APIRoute) -> bool:
    return bool(route.dependant.path_params)


def _roles(route: APIRoute) -> tuple[Role, ...]:
    admitted = _admitted(route)
    return tuple(r for r in (admitted or list(Role)) if r is not Role.OPERATOR)


def _swept() -> list[tuple[APIRoute, str, Role]]:
    return [
        (route, method, role)
        for route in _routes()
        if _has_ids(route) and route.path not in NOT_SWEPT
        for method in sorted((route.methods or set()) - {"HEAD"})
        for role in _roles(route)
    ]


def test_every_route_with_an_id_is_swept_or_listed() -> None:
    with_ids = {route.path for route in _routes() if _has_ids(route)}
    operator_only = {route.path for route in _routes() if _has_ids(route) and not _roles(route)}
    swept = {route.path for route, _, _ in _swept()}
    assert swept | set(NOT_SWEPT) | operator_only == with_ids
    assert not swept & set(NOT_SWEPT), "a route is both swept and listed"
    assert not set(NOT_SWEPT) & operator_only, f"listed, yet {OPERATOR_ONLY}"
    needs_body = {
        route.path
        for route, method, _ in _swept()
        if route.body_field is not None and route.body_field.field_info.is_required()
    }
    assert needs_body <= set(BODIES), f"needs a body: {needs_body - set(BODIES)}"
    queries = {
        param.name
        for route, _, _ in _swept()
        for param in route.dependant.query_params
        if param.field_info.is_required()
    }
    assert queries <= set(QUERY), f"needs a query value: {queries - set(QUERY)}"
    unmapped = {
        f"{role} {route.path} {{{param.name}}}"
        for route, _, role in _swept()
        for param in route.dependant.path_params
        if param.name != "key_id" and World.id_name(route, role, param.name) is None
    }
    assert not unmapped, f"which of A's ids fills these? {unmapped}"


async def _key_id(http: httpx.AsyncClient, key: str) -> str:
    answer = await http.get("/v1/me/keys", headers=bearer(key))
    assert answer.status_code == 200, answer.text
    return str(answer.json()["items"][0]["key_id"])


@pytest.fixture(scope="module")
async def world(
    api_url: str, settings: Settings, operator_key: str, gateway_url: str, iot_gateway_url: str
) -> World:
    world = World()
    async with httpx.AsyncClient(base_url=api_url, timeout=15) as http:
        await behave(gateway_url)
        await behave_iot(iot_gateway_url)
        # Tenant B of each role: a key, and nothing else.
        for role in Role:
            if role is Role.OPERATOR:
                continue
            tenant_id, key = await make_tenant(settings, role=role)
            world.strangers[role] = bearer(key)
            world.tenants.append(tenant_id)
            tenant_id, key = await make_tenant(settings, role=role)
            world.keys[role] = await _key_id(http, key)
            world.holders[role, "key_id"] = bearer(key)
            world.tenants.append(tenant_id)

        # Merchant A (promotions): a campaign and goods on the exchange.
        shop = await Shop(http, settings).open(mb=1000)
        campaign = await shop.campaign()
        world.ids["campaign_id"] = str(campaign["campaign_id"])
        world.ids["merchant_endpoint_id"], world.ids["merchant_msg_id"] = await _webhook(
            http, shop.merchant
        )
        item = await http.post(
            "/v1/operator/wallet/catalogue",
            json={"kind": "merchant_goods", "name": "Phone case", "sku": "xsweep-case",
                  "price_bytes": MB, "price_minor": 1, "merchant_id": shop.merchant_id,
                  "stock": 10},
            headers=bearer(operator_key),
        )  # fmt: skip
        assert item.status_code == 201, item.text

        # Driver A: a wallet, an exchange order of A's goods, a carrier order, a transfer-in
        # waiting for consent.
        driver_id, driver = await funded_driver(http, settings, mb=200)
        world.ids["driver_id"] = driver_id
        placed = await http.post(
            "/v1/wallet/exchange-orders", json={"item_id": item.json()["item_id"]},
            headers=idem(driver),
        )  # fmt: skip
        assert placed.status_code == 202, placed.text
        world.ids["exchange_order_id"] = str(placed.json()["order_id"])
        await settled(
            http, driver, f"/v1/wallet/exchange-orders/{world.ids['exchange_order_id']}",
            final={"paid", "fulfilled", "refunded", "failed"},
        )  # fmt: skip
        carrier_id = await carrier(http, operator_key)
        phone = "139" + "".join(secrets.choice("0123456789") for _ in range(8))
        top_up = await http.post(
            "/v1/wallet/top-ups", json={"carrier_id": carrier_id, "phone": phone,
                                        "package_mb": 10},
            headers=idem(driver),
        )  # fmt: skip
        assert top_up.status_code == 202, top_up.text
        world.ids["carrier_order_id"] = str(top_up.json()["order_id"])
        await settled(
            http, driver, f"/v1/wallet/carrier-orders/{world.ids['carrier_order_id']}",
            final={"confirmed", "failed"},
        )  # fmt: skip
        world.ids["transfer_in_id"], world.transfer_in_code = await placed_transfer_in(
            http, gateway_url, driver, carrier_id=carrier_id, msisdn=phone, mb=10
        )

        # Sponsor A (an automaker): an owned SIM in a vehicle whose driver accepted, a second
        # vehicle whose invitation waits, a policy, a webhook endpoint and a message.
        automaker_id, automaker_key = await make_tenant(settings, role=Role.SPONSOR)
        automaker = bearer(automaker_key)
        world.tenants.append(automaker_id)
        world.ids["automaker_id"] = automaker_id
        world.ids["iccid"], world.ids["vin"] = new_iccid(), _vin()
        await fit_vehicle(
            http, operator_key, automaker_id=automaker_id, automaker=automaker,
            vin=world.ids["vin"], iccids=[world.ids["iccid"]], driver_id=driver_id,
            driver=driver,
        )  # fmt: skip
        world.ids["invited_vin"] = _vin()
        await fit_vehicle(
            http, operator_key, automaker_id=automaker_id, automaker=automaker,
            vin=world.ids["invited_vin"], iccids=[new_iccid()], driver_id=driver_id,
        )  # fmt: skip
        policy = await http.post(
            "/v1/sponsor/policies",
            json={"name": "telematics", "categories": ["telematics"], "unit_price": "0.05",
                  "scope": {"kind": "automaker", "automaker_id": automaker_id}},
            headers=idem(automaker),
        )  # fmt: skip
        assert policy.status_code == 201, policy.text
        world.ids["policy_id"] = str(policy.json()["policy_id"])
        world.ids["endpoint_id"], world.ids["msg_id"] = await _webhook(http, automaker)
        billed = await _billed_sponsor(http, settings, operator_key, world)

        # Merchant A (IoT cards): a store; driver A holds one of its cards, with an order, an
        # invoice and a usage threshold.
        store = await Store(http, settings, operator_key).open(cards=1)
        world.tenants += [shop.merchant_id, shop.partner_id, store.merchant_id, driver_id]
        world.ids["plan_id"] = str(store.plan["plan_id"])
        world.ids["card_iccid"], _ = await active_card(http, store, driver)
        orders = await http.get("/v1/merchant/iot/orders", headers=store.merchant)
        world.ids["iot_order_id"] = str(orders.json()["items"][0]["order_id"])
        await poll(
            http, driver, f"/v1/iot/orders/{world.ids['iot_order_id']}", field="state",
            until={"paid"},
        )  # fmt: skip
        world.ids["merchant_invoice_id"] = await _first(
            http, "/v1/merchant/iot/invoices", store.merchant, "invoice_id"
        )
        world.ids["holder_invoice_id"] = await _first(
            http, "/v1/iot/invoices", driver, "invoice_id"
        )
        threshold = await http.post(
            "/v1/merchant/iot/thresholds", json={"percent": 80}, headers=store.merchant
        )
        assert threshold.status_code == 201, threshold.text
        world.ids["threshold_id"] = str(threshold.json()["threshold_id"])
    for name in ("campaign_id", "exchange_order_id", "merchant_endpoint_id", "merchant_msg_id"):
        world.holders[Role.MERCHANT, name] = shop.merchant
    for name in ("card_iccid", "iot_order_id", "driver_id", "merchant_invoice_id", "threshold_id"):
        world.holders[Role.MERCHANT, name] = store.merchant
    for name in ("automaker_id", "iccid", "vin", "policy_id", "endpoint_id", "msg_id"):
        world.holders[Role.SPONSOR, name] = automaker
    for name in ("billed_period", "invoice_number", "credit_note_number", "line_id"):
        world.holders[Role.SPONSOR, name] = billed
    for name in ("exchange_order_id", "carrier_order_id", "transfer_in_id", "vin", "invited_vin",
                 "card_iccid", "iot_order_id", "holder_invoice_id"):  # fmt: skip
        world.holders[Role.DRIVER, name] = driver
    return world


async def _billed_sponsor(
    http: httpx.AsyncClient, settings: Settings, operator_key: str, world: World
) -> dict[str, str]:
    """Sponsor A's billed month: stored allocations, closed into an invoice with a credit note
    and a statement line; returns the sponsor's headers."""
    period = date(2025, 9, 1)
    sponsor_id, key = await make_tenant(settings, role=Role.SPONSOR)
    world.tenants.append(sponsor_id)
    async with statement_factories.committed(settings) as conn:
        policy = await statement_factories.policy(
            conn, sponsor_id=UUID(sponsor_id), unit_price="1", currency="CNY",
            categories=("navigation",),
        )  # fmt: skip
        await statement_factories.allocate(
            conn, window_start=statement_factories.at(period), app=statement_factories.app_id(),
            category="navigation", data_bytes=3 * MB, policy=policy,
        )  # fmt: skip
    world.ids["billed_period"] = f"{period:%Y-%m}"
    headers = bearer(key)
    statement = await http.get(f"/v1/sponsor/statements/{period:%Y-%m}", headers=headers)
    assert statement.status_code == 200, statement.text
    world.ids["line_id"] = str(statement.json()["lines"][0]["line_id"])
    operator = bearer(operator_key)
    closed = await http.post(
        f"/v1/operator/billing/sponsors/{sponsor_id}/periods/{period:%Y-%m}/close",
        headers=idem(operator),
    )
    assert closed.status_code == 201, closed.text
    world.ids["invoice_number"] = str(closed.json()["number"])
    note = await http.post(
        f"/v1/operator/billing/invoices/{world.ids['invoice_number']}/credit-notes",
        json={"reason": "goodwill", "lines": [{"line_no": 1, "amount_minor": 10}]},
        headers=idem(operator),
    )
    assert note.status_code == 201, note.text
    world.ids["credit_note_number"] = str(note.json()["number"])
    return headers


async def _webhook(http: httpx.AsyncClient, headers: dict[str, str]) -> tuple[str, str]:
    """A webhook endpoint with one message; (endpoint id, message id)."""
    endpoint = await http.post(
        "/v1/webhooks/endpoints", json={"url": "https://hooks.example.com/a"}, headers=headers
    )
    assert endpoint.status_code == 201, endpoint.text
    endpoint_id = str(endpoint.json()["endpoint_id"])
    path = f"/v1/webhooks/endpoints/{endpoint_id}"
    sent = await http.post(f"{path}/test", headers=headers)
    assert sent.status_code == 202, sent.text
    # Disabled, so that no delivery attempt changes the message while the sweep runs.
    paused = await http.patch(path, json={"enabled": False}, headers=headers)
    assert paused.status_code == 200, paused.text
    return endpoint_id, str(sent.json()["msg_id"])


def _vin() -> str:
    return "".join(secrets.choice("ABCDEFGHJKLMNPRSTUVWXYZ0123456789") for _ in range(17))


async def _first(http: httpx.AsyncClient, path: str, headers: dict[str, str], name: str) -> str:
    """The first item's `name` of a list that fills in the background."""
    for _ in range(200):
        answer = await http.get(path, headers=headers)
        assert answer.status_code == 200, answer.text
        if items := answer.json()["items"]:
            return str(items[0][name])
        await asyncio.sleep(0.05)
    raise AssertionError(f"{path} stayed empty")


def _fill(route: APIRoute, role: Role, world: World) -> str:
    return re.sub(r"\{([^}:]+)(?::[^}]*)?\}", lambda m: world.value(route, role, m[1]), route.path)


def _checksums(settings: Settings, world: World) -> dict[str, str]:
    # The rows that mention a tenant of the sweep or one of A's ids: what the sweep could move.
    # Short ids (a policy's number) would match unrelated rows: their rows carry A's tenant id.
    marks = "|".join(re.escape(v) for v in [*world.tenants, *world.ids.values()] if len(v) >= 8)
    with psycopg.connect(settings.database_dsn) as conn:
        return {
            table: str(
                conn.execute(  # type: ignore[index]
                    f"SELECT md5(coalesce(string_agg(t::text, ',' ORDER BY t::text), ''))"
                    f" FROM (SELECT {WATCHED_COLUMNS.get(table, '*')} FROM {table}) t"
                    " WHERE t::text ~ %s",
                    (marks,),
                ).fetchone()[0]
            )
            for table in WATCHED
        }


async def _books(settings: Settings) -> list[str]:
    conn = await db.connect(settings, application_name="flowbill-test")
    try:
        async with conn.transaction():
            return await wallet.check_books(conn)
    finally:
        await conn.close()


async def test_tenant_a_reads_each_of_its_ids(http: httpx.AsyncClient, world: World) -> None:
    """The control: every id the sweep uses is real, so B's 404 is a refusal, not a typo."""
    unread = []
    for route, method, role in _swept():
        if method != "GET" or route.path in HOLDER_SEES_NOTHING:
            continue
        query = {p.name: QUERY[p.name] for p in route.dependant.query_params if p.name in QUERY}
        holder = world.holder(route, role)
        answer = await http.get(_fill(route, role, world), params=query, headers=holder)
        if answer.status_code != 200:
            unread.append(f"{role} {route.path}: {answer.status_code} {answer.text[:120]}")
    assert unread == [], "\n".join(unread)


async def test_tenant_b_gets_404_for_every_id_of_tenant_a(
    http: httpx.AsyncClient, settings: Settings, world: World
) -> None:
    before, books = _checksums(settings, world), await _books(settings)
    leaks = []
    for route, method, role in _swept():
        path = _fill(route, role, world)
        body = BODIES[route.path](world, role) if route.path in BODIES else None
        query = {p.name: QUERY[p.name] for p in route.dependant.query_params if p.name in QUERY}
        answer = await http.request(
            method, path, json=body, params=query,
            headers={**world.strangers[role], "Idempotency-Key": secrets.token_hex(8)},
        )  # fmt: skip
        status, problem = REFUSED_OTHERWISE.get((method, route.path), (404, ""))
        if answer.status_code != status:
            leaks.append(f"{role} {method} {route.path}: {answer.status_code} {answer.text[:200]}")
            continue
        assert_problem(answer, status, problem)
    assert leaks == [], "\n".join(leaks)
    assert len(_swept()) > 40, "the sweep reached almost no route"
    assert _checksums(settings, world) == before
    assert await _books(settings) == books
