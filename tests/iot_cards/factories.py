"""Factories for IoT card tests over HTTP: plain async helpers with keyword-only options."""

from __future__ import annotations

import asyncio
import secrets
import time
from datetime import UTC, date, datetime, timedelta

import httpx

from flowbill import db
from flowbill.settings import Settings
from flowbill.units import MB
from ingest import repository as usage_store
from ingest.protocol import iccid_check_digit
from iot_cards.idcheck import check_digit
from tenants.schemas import Role
from tests.conftest import bearer, make_tenant

# A valid unified social credit code (GB 32100-2015).
TAX_ID = "91350100M000100Y43"


def idem(headers: dict[str, str], key: str | None = None) -> dict[str, str]:
    return {**headers, "Idempotency-Key": key or secrets.token_hex(8)}


def new_card(prefix: str | None = None, serial: int = 0) -> tuple[str, str, str]:
    """A valid (iccid, imsi, msisdn); cards of one prefix are a block in ICCID order."""
    prefix = prefix or block_prefix()
    body = f"{prefix}{serial:06d}"
    iccid = body + iccid_check_digit(body)
    imsi = "46011" + "".join(secrets.choice("0123456789") for _ in range(10))
    msisdn = "1064" + "".join(secrets.choice("0123456789") for _ in range(9))
    return iccid, imsi, msisdn


def block_prefix() -> str:
    """13 digits no other test's block starts with."""
    return "8986" + "".join(secrets.choice("0123456789") for _ in range(9))


def new_imei() -> str:
    body = "35" + "".join(secrets.choice("0123456789") for _ in range(12))
    return body + iccid_check_digit(body)


def resident_id(*, born: date | None = None, region: str | None = None) -> str:
    """A valid resident ID number, random unless told its birth date or region.

    The tests share one database, and an ID number counts its cards across all of them: the
    number must be new to the test (a county, a birth date and a sequence: about 1.5 billion).
    """
    if born is None:
        born = date(1960, 1, 1) + timedelta(days=secrets.randbelow(14_600))
    if region is None:
        region = f"1101{1 + secrets.randbelow(99):02d}"
    first17 = f"{region}{born:%Y%m%d}{secrets.randbelow(1000):03d}"
    return first17 + check_digit(first17)


def person(**overrides: str) -> dict[str, str]:
    return {"name": "张小三", "id_number": resident_id(), "phone": "13812345678", **overrides}


async def behave_iot(iot_gateway_url: str, **behaviour: object) -> None:
    async with httpx.AsyncClient(base_url=iot_gateway_url, timeout=5) as client:
        answer = await client.put("/_simulator/behaviour", json=behaviour)
        assert answer.status_code == 200, answer.text


async def poll(
    http: httpx.AsyncClient,
    headers: dict[str, str],
    path: str,
    *,
    field: str,
    until: set[str],
    timeout: float = 15.0,
) -> dict[str, object]:
    """GET `path` until its `field` is one of `until`."""
    deadline = time.monotonic() + timeout
    while True:
        answer = await http.get(path, headers=headers)
        assert answer.status_code == 200, answer.text
        found: dict[str, object] = answer.json()
        if found[field] in until:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{path}: {field} still {found[field]}: {found}")
        await asyncio.sleep(0.05)


async def import_cards(
    http: httpx.AsyncClient, operator_key: str, cards: list[tuple[str, str, str]]
) -> httpx.Response:
    text = "iccid,imsi,msisdn\n" + "".join(f"{a},{b},{c}\n" for a, b, c in cards)
    return await http.post(
        "/v1/operator/iot/card-imports",
        params={"carrier": "cmcc-iot", "label": "test batch"},
        content=text.encode(),
        headers={**bearer(operator_key), "Content-Type": "text/csv"},
    )


async def wholesale_plan(
    http: httpx.AsyncClient, operator_key: str, **spec: object
) -> dict[str, object]:
    body = {
        "name": "IoT 1 GB monthly",
        "kind": "monthly",
        "data_mb": 1024,
        "months": 1,
        "wholesale_minor": 1000,
        **spec,
    }
    made = await http.post("/v1/operator/iot/plans", json=body, headers=bearer(operator_key))
    assert made.status_code == 201, made.text
    plan: dict[str, object] = made.json()
    return plan


class Store:
    """A merchant with a seller profile, `cards` cards of stock and a plan on sale."""

    def __init__(self, http: httpx.AsyncClient, settings: Settings, operator_key: str) -> None:
        self.http = http
        self.settings = settings
        self.operator_key = operator_key

    async def open(
        self,
        *,
        cards: int = 3,
        retail_minor: int = 3000,
        wholesale_minor: int = 1000,
        data_mb: int = 1024,
        pooled: bool = False,
    ) -> Store:
        self.merchant_id, key = await make_tenant(self.settings, role=Role.MERCHANT)
        self.merchant_key = key
        self.merchant = bearer(key)
        profile = await self.http.put(
            "/v1/merchant/iot/profile",
            json={"seller_name": "深圳物联科技有限公司", "tax_id": TAX_ID},
            headers=self.merchant,
        )
        assert profile.status_code == 200, profile.text
        self.plan = await wholesale_plan(
            self.http, self.operator_key, wholesale_minor=wholesale_minor, data_mb=data_mb
        )
        await self.price(self.plan, retail_minor=retail_minor, pooled=pooled)
        prefix = block_prefix()
        self.cards = [new_card(prefix, n) for n in range(cards)]
        if cards:
            imported = await import_cards(self.http, self.operator_key, self.cards)
            assert imported.status_code == 201, imported.text
            await self.assign(self.cards[0][0], self.cards[-1][0])
        return self

    async def assign(self, first: str, last: str) -> httpx.Response:
        answer = await self.http.post(
            "/v1/operator/iot/card-assignments",
            json={"merchant_id": self.merchant_id, "first_iccid": first, "last_iccid": last},
            headers=bearer(self.operator_key),
        )
        assert answer.status_code == 200, answer.text
        return answer

    async def price(self, plan: dict[str, object], **body: object) -> dict[str, object]:
        answer = await self.http.put(
            f"/v1/merchant/iot/plans/{plan['plan_id']}", json=body, headers=self.merchant
        )
        assert answer.status_code == 200, answer.text
        priced: dict[str, object] = answer.json()
        return priced


async def buyer(settings: Settings) -> tuple[str, dict[str, str]]:
    user, key = await make_tenant(settings, role=Role.DRIVER)
    return user, bearer(key)


async def buy(
    http: httpx.AsyncClient, store: Store, holder: dict[str, str], **extra: object
) -> httpx.Response:
    body = {"merchant_id": store.merchant_id, "plan_id": store.plan["plan_id"], **extra}
    return await http.post("/v1/iot/orders", json=body, headers=idem(holder))


async def paid_card(
    http: httpx.AsyncClient, store: Store, holder: dict[str, str]
) -> tuple[str, dict[str, object]]:
    """Buy a card and wait for its payment; returns (iccid, order)."""
    placed = await buy(http, store, holder)
    assert placed.status_code == 202, placed.text
    order = await poll(
        http,
        holder,
        f"/v1/iot/orders/{placed.json()['order_id']}",
        field="state",
        until={"paid", "failed"},
    )
    assert order["state"] == "paid", order
    return str(order["iccid"]), order


async def verify(
    http: httpx.AsyncClient, holder: dict[str, str], iccid: str, **who: str
) -> httpx.Response:
    return await http.post(
        f"/v1/iot/cards/{iccid}/verification", json=person(**who), headers=idem(holder)
    )


async def verified_card(
    http: httpx.AsyncClient, store: Store, holder: dict[str, str], **who: str
) -> str:
    iccid, _ = await paid_card(http, store, holder)
    sent = await verify(http, holder, iccid, **who)
    assert sent.status_code == 202, sent.text
    done = await poll(
        http,
        holder,
        f"/v1/iot/cards/{iccid}/verification",
        field="state",
        until={"verified", "rejected"},
    )
    assert done["state"] == "verified", done
    return iccid


async def active_card(
    http: httpx.AsyncClient, store: Store, holder: dict[str, str]
) -> tuple[str, str]:
    """A verified, activated card; returns (iccid, bound IMEI)."""
    iccid = await verified_card(http, store, holder)
    imei = new_imei()
    activated = await http.post(
        f"/v1/iot/cards/{iccid}/activation", json={"imei": imei}, headers=idem(holder)
    )
    assert activated.status_code == 200, activated.text
    assert activated.json()["state"] == "active"
    return iccid, imei


async def use_data(settings: Settings, iccid: str, *, mb: int, app: str = "telematics") -> None:
    """Store metered usage for a card in the current hour, as the ingest workers would."""
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    conn = await db.connect(settings, application_name="flowbill-test")
    try:
        async with conn.transaction():
            await usage_store.store_reports(
                conn,
                [
                    usage_store.StagedReport(
                        iccid=iccid,
                        boot=1,
                        seq=secrets.randbelow(2**40),
                        window_start=now,
                        window_end=now + timedelta(minutes=1),
                        apps=[app],
                        ups=[0],
                        downs=[mb * MB],
                        received_at=datetime.now(UTC),
                    )
                ],
            )
    finally:
        await conn.close()


async def sweep(http: httpx.AsyncClient, operator_key: str) -> dict[str, object]:
    answer = await http.post("/v1/operator/iot/sweeps", headers=bearer(operator_key))
    assert answer.status_code == 200, answer.text
    report: dict[str, object] = answer.json()
    return report
