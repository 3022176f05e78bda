"""Factories for wallet tests over HTTP: plain async helpers with keyword-only options."""

from __future__ import annotations

import asyncio
import secrets
import time

import httpx

from flowbill.settings import Settings
from flowbill.units import MB
from tenants.schemas import Role
from tests.conftest import bearer, make_tenant


def idem(headers: dict[str, str], key: str | None = None) -> dict[str, str]:
    return {**headers, "Idempotency-Key": key or secrets.token_hex(8)}


class Shop:
    """A merchant with a funded pool and a partner platform acting for it."""

    def __init__(self, http: httpx.AsyncClient, settings: Settings) -> None:
        self.http = http
        self.settings = settings

    async def open(self, *, mb: int = 1000) -> Shop:
        self.merchant_id, key = await make_tenant(self.settings, role=Role.MERCHANT)
        self.partner_id, partner_key = await make_tenant(self.settings, role=Role.PARTNER)
        self.merchant = bearer(key)
        self.partner = bearer(partner_key)
        bought = await self.http.post(
            "/v1/merchant/data-purchases", json={"mb": mb}, headers=idem(self.merchant)
        )
        assert bought.status_code == 201, bought.text
        linked = await self.http.put(
            f"/v1/merchant/partners/{self.partner_id}", headers=self.merchant
        )
        assert linked.status_code == 204, linked.text
        return self

    async def campaign(self, **spec: object) -> dict[str, object]:
        body = {
            "name": "Favourite our shop",
            "action": "favourite_shop",
            "bytes_per_action": 10 * MB,
            "budget_bytes": 100 * MB,
            **spec,
        }
        made = await self.http.post(
            "/v1/merchant/campaigns", json=body, headers=idem(self.merchant)
        )
        assert made.status_code == 201, made.text
        campaign: dict[str, object] = made.json()
        return campaign

    async def event(
        self, campaign: dict[str, object], user: str, **extra: object
    ) -> httpx.Response:
        body = {
            "event_id": extra.pop("event_id", secrets.token_hex(8)),
            "campaign_id": campaign["campaign_id"],
            "action": campaign["action"],
            "user_id": user,
            **extra,
        }
        return await self.http.post("/v1/partner/action-events", json=body, headers=self.partner)


async def driver(settings: Settings) -> tuple[str, dict[str, str]]:
    user, key = await make_tenant(settings, role=Role.DRIVER)
    return user, bearer(key)


async def balance_of(http: httpx.AsyncClient, headers: dict[str, str]) -> int:
    answer = await http.get("/v1/wallet", headers=headers)
    assert answer.status_code == 200, answer.text
    return int(answer.json()["data_bytes"])


async def funded_driver(
    http: httpx.AsyncClient, settings: Settings, *, mb: int, validity_days: int = 730
) -> tuple[str, dict[str, str]]:
    """A driver whose wallet holds `mb` MB, granted by a shop's campaign."""
    shop = await Shop(http, settings).open(mb=max(100, mb))
    campaign = await shop.campaign(
        bytes_per_action=mb * MB, budget_bytes=mb * MB, validity_days=validity_days
    )
    user, wallet = await driver(settings)
    granted = await shop.event(campaign, user)
    assert granted.status_code == 200, granted.text
    return user, wallet


async def carrier(http: httpx.AsyncClient, operator_key: str, *, transfer_in: bool = True) -> str:
    """A carrier selling the standard packages (10 MB to 1 GB, at least 10 MB)."""
    carrier_id = f"cm-{secrets.token_hex(4)}"
    made = await http.put(
        f"/v1/operator/wallet/carriers/{carrier_id}",
        json={"name": "China Mobile Jiangsu", "package_mb": [10, 30, 50, 100, 200, 500, 1024],
              "min_package_mb": 10, "transfer_in": transfer_in},
        headers=bearer(operator_key),
    )  # fmt: skip
    assert made.status_code == 200, made.text
    return carrier_id


async def behave(gateway_url: str, **behaviour: object) -> None:
    """Set how the simulated gateways behave (fields left out return to their defaults)."""
    async with httpx.AsyncClient(base_url=gateway_url, timeout=5) as client:
        answer = await client.put("/_simulator/behaviour", json=behaviour)
        assert answer.status_code == 200, answer.text


async def simulator_ledger(gateway_url: str) -> dict[str, object]:
    """What the simulated gateways actually did."""
    async with httpx.AsyncClient(base_url=gateway_url, timeout=5) as client:
        answer = await client.get("/_simulator/ledger")
        assert answer.status_code == 200, answer.text
        ledger: dict[str, object] = answer.json()
        return ledger


async def settled(
    http: httpx.AsyncClient, headers: dict[str, str], path: str, *, final: set[str],
    timeout: float = 15.0,
) -> dict[str, object]:  # fmt: skip
    """Poll an order until its state is one of `final`."""
    deadline = time.monotonic() + timeout
    while True:
        answer = await http.get(path, headers=headers)
        assert answer.status_code == 200, answer.text
        order: dict[str, object] = answer.json()
        if order["state"] in final:
            return order
        if time.monotonic() > deadline:
            raise AssertionError(f"order still {order['state']}: {order}")
        await asyncio.sleep(0.1)


async def texted_codes(gateway_url: str, msisdn: str) -> list[str]:
    """The one-time codes a phone received, oldest first: read on the phone's side."""
    async with httpx.AsyncClient(base_url=gateway_url, timeout=5) as client:
        answer = await client.get(f"/_simulator/phones/{msisdn}/messages")
        assert answer.status_code == 200, answer.text
        return [str(message["code"]) for message in answer.json()["messages"]]


async def placed_transfer_in(
    http: httpx.AsyncClient, gateway_url: str, wallet: dict[str, str], *, carrier_id: str,
    msisdn: str, mb: int,
) -> tuple[str, str]:  # fmt: skip
    """A transfer-in placed, and the code its carrier texted to the line: (order id, code)."""
    before = len(await texted_codes(gateway_url, msisdn))
    placed = await http.post(
        "/v1/wallet/transfers-in",
        json={"carrier_id": carrier_id, "phone": msisdn, "mb": mb},
        headers=idem(wallet),
    )
    assert placed.status_code == 202, placed.text
    assert placed.json()["state"] == "awaiting_consent"
    deadline = time.monotonic() + 5
    while len(codes := await texted_codes(gateway_url, msisdn)) == before:
        assert time.monotonic() < deadline, "no code reached the phone"
        await asyncio.sleep(0.05)
    return str(placed.json()["order_id"]), codes[-1]


async def confirm_transfer_in(
    http: httpx.AsyncClient, wallet: dict[str, str], order_id: str, code: str
) -> httpx.Response:
    return await http.post(
        f"/v1/wallet/transfers-in/{order_id}/confirmation", json={"code": code}, headers=wallet
    )


async def awaiting_transfer_in(
    http: httpx.AsyncClient, settings: Settings, operator_key: str, gateway_url: str, *,
    mb: int, msisdn: str | None = None,
) -> tuple[dict[str, str], str, str]:  # fmt: skip
    """A driver holding 10 MB with a transfer-in of `mb` MB from a new carrier, waiting for
    consent: (the driver's headers, order id, the code texted to the line)."""
    carrier_id = await carrier(http, operator_key)
    _, wallet = await funded_driver(http, settings, mb=10)
    number = msisdn or "139" + "".join(secrets.choice("0123456789") for _ in range(8))
    order_id, code = await placed_transfer_in(
        http, gateway_url, wallet, carrier_id=carrier_id, msisdn=number, mb=mb
    )
    return wallet, order_id, code
