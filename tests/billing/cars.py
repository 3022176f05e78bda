"""The car scenario over the real API and MQTT: an automaker, a map vendor and a music provider
sponsor a vehicle whose driver holds a wallet. Plain async helpers with keyword-only options."""

from __future__ import annotations

import asyncio
import json
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg

from billing.allocation import worker
from flowbill.settings import Settings
from flowbill.units import MB
from ingest import mqtt_session
from ingest.protocol import AppUsage, UsageReport, encode_report
from tenants.schemas import Role
from tests.conftest import as_component, bearer, make_tenant, new_iccid, wait_for
from tests.sponsors.factories import fit_vehicle
from tests.wallet.factories import funded_driver, idem

GB = 1024 * MB
APPS = {
    "telematics": "telematics",
    "backend.sync": "backend",
    "nav.amap": "navigation",
    "mapupdate.amap": "map_update",
    "music.qq": "music",
    "wifi.hotspot": "wifi_hotspot",
    "video.iqiyi": "video",
}
VIN_ALPHABET = "ABCDEFGHJKLMNPRSTUVWXYZ0123456789"


def new_vin() -> str:
    return "".join(secrets.choice(VIN_ALPHABET) for _ in range(17))


async def catalogue(http: httpx.AsyncClient, operator_key: str) -> None:
    for app, category in APPS.items():
        done = await http.put(
            f"/v1/operator/catalogue/apps/{app}", json={"category": category},
            headers=bearer(operator_key),
        )  # fmt: skip
        assert done.status_code == 200, done.text


class Car:
    """One vehicle with one SIM, its driver, and its three sponsors' policies."""

    def __init__(self, http: httpx.AsyncClient, settings: Settings) -> None:
        self.http = http
        self.settings = settings
        self.iccid = new_iccid()
        self.vin = new_vin()
        self.seq = 0
        self.policies: dict[str, dict[str, Any]] = {}

    async def open(
        self,
        operator_key: str,
        *,
        wallet_mb: int = 0,
        music_cap: int = GB,
        nav_budget: int | None = None,
        accept: bool = True,
    ) -> Car:
        """The car, its sponsors and its policies; the driver accepts the vehicle unless
        `accept` is false (then the driver is only invited)."""
        await catalogue(self.http, operator_key)
        self.automaker_id, key = await make_tenant(self.settings, role=Role.SPONSOR)
        self.automaker = bearer(key)
        self.map_vendor_id, key = await make_tenant(self.settings, role=Role.SPONSOR)
        self.map_vendor = bearer(key)
        self.music_id, key = await make_tenant(self.settings, role=Role.SPONSOR)
        self.music = bearer(key)
        if wallet_mb:
            self.driver_id, self.driver = await funded_driver(
                self.http, self.settings, mb=wallet_mb
            )
        else:
            self.driver_id, key = await make_tenant(self.settings, role=Role.DRIVER)
            self.driver = bearer(key)
        await fit_vehicle(
            self.http, operator_key, automaker_id=self.automaker_id, automaker=self.automaker,
            vin=self.vin, iccids=[self.iccid], model="Voyah Free", driver_id=self.driver_id,
            driver=self.driver if accept else None,
        )  # fmt: skip
        for partner in (self.map_vendor_id, self.music_id):
            allowed = await self.http.put(f"/v1/sponsor/partners/{partner}", headers=self.automaker)
            assert allowed.status_code == 204, allowed.text
        await self.policy(
            "telematics", self.automaker, categories=["telematics", "backend", "ota"],
            unit_price="0.02", priority=10,
        )  # fmt: skip
        await self.policy(
            "navigation", self.map_vendor,
            categories=["navigation", "map_update", "traffic_info"], unit_price="0.03",
            budget_bytes=nav_budget,
        )  # fmt: skip
        await self.policy(
            "music", self.music, categories=["music"], cap_bytes=music_cap, unit_price="0.05"
        )
        self.opened_at = datetime.now(UTC) + timedelta(seconds=1)
        return self

    async def policy(self, name: str, sponsor: dict[str, str], **spec: object) -> dict[str, Any]:
        body = {"name": name, "scope": {"kind": "automaker", "automaker_id": self.automaker_id}}
        body.update(spec)
        made = await self.http.post("/v1/sponsor/policies", json=body, headers=idem(sponsor))
        assert made.status_code == 201, made.text
        policy: dict[str, Any] = made.json()
        self.policies[name] = policy
        return policy

    def report(
        self, apps: dict[str, int], *, start: datetime | None = None, boot: int = 1
    ) -> tuple[str, bytes]:
        """The next report of this SIM: bytes per app (split half up, half down)."""
        self.seq += 1
        # Policies pay from the moment they are made: reports start after that, a second
        # apart (windows may end a little in the future: devices' clocks drift).
        begin = start or self.opened_at + timedelta(seconds=self.seq)
        body = UsageReport(
            iccid=self.iccid, boot=boot, seq=self.seq, start=begin,
            end=begin + timedelta(seconds=30),
            apps=[AppUsage(a, b // 2, b - b // 2) for a, b in apps.items()],
        )  # fmt: skip
        return f"flowbill/v1/sims/{self.iccid}/usage", encode_report(body)

    async def send(self, conn: psycopg.AsyncConnection, messages: list[tuple[str, bytes]]) -> None:
        """Publish over MQTT and wait until the ingest workers stored every report."""
        before = await reports_of(conn, self.iccid)
        async with mqtt_session.broker_client(self.settings) as client:
            await asyncio.gather(*(client.publish(t, p, qos=1) for t, p in messages))

        async def stored() -> bool:
            return await reports_of(conn, self.iccid) == before + len(messages)

        await wait_for(stored)

    async def paid(self, conn: psycopg.AsyncConnection) -> dict[tuple[str, str | None], int]:
        """Allocated bytes per (payer kind, payer) for this SIM."""
        cur = await conn.execute(
            "SELECT payer_kind, payer_id::text, sum(bytes) FROM allocations WHERE iccid = %s"
            " GROUP BY 1, 2",
            (self.iccid,),
        )
        return {(k, p): int(b) for k, p, b in await cur.fetchall()}

    async def coverage(self) -> dict[str, Any]:
        """The retained coverage message, as a device subscribing now receives it."""
        async with mqtt_session.broker_client(self.settings) as client:
            await client.subscribe(f"flowbill/v1/sims/{self.iccid}/coverage", qos=1)
            async with asyncio.timeout(10):
                async for message in client.messages:
                    assert message.retain
                    found: dict[str, Any] = json.loads(bytes(message.payload))  # type: ignore[arg-type]
                    return found
        raise AssertionError("no coverage message")


async def reports_of(conn: psycopg.AsyncConnection, iccid: str) -> int:
    cur = await conn.execute("SELECT count(*) FROM usage_reports WHERE iccid = %s", (iccid,))
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def bill(settings: Settings, **overrides: object) -> int:
    """One allocation run until nothing is left, as `flowbill bill --once` does (as the
    billing role)."""
    return await worker.run(
        as_component(settings, "billing").model_copy(update=overrides), once=True
    )
