"""Driver page benchmark: server time to render a month of one-minute reports of a vehicle
with ten apps, against a baseline measured in the same run on the same server.

The data: one vehicle, one SIM, ten apps sponsored by an automaker, a map vendor and a music
provider (the rest is the driver's, from a wallet), 43,200 one-minute reports (the last full
month, in the billing time zone) stored as ingest stores them, then allocated by the real
allocation run (`AllocationRun.batch`, as `flowbill bill`), which keeps the daily rollup the
page reads. The server: `flowbill serve` in its own process. Each page request reports its
server time in a `Server-Timing` header; the baseline is GET /healthz and GET /v1/wallet
(a small authenticated read) over the same connection. Target: p99 under 300 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import socket
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
from allocation_throughput import APPS, allocation_run, fit, iccid_for
from throwaway_stack import fresh_stack, machine

from devstack import localstack
from flowbill import db
from flowbill.periods import month_of, month_start
from flowbill.settings import Settings
from flowbill.units import MB
from sponsors import catalogue
from sponsors import service as sponsors
from sponsors.schemas import (
    CatalogueAppUpdate,
    Category,
    PolicyCreate,
    Scope,
    ScopeKind,
    VehicleUpdate,
)
from tenants import service as tenants
from tenants.schemas import Role
from wallet import service as wallet

REPO = Path(__file__).resolve().parent.parent
MINUTES_PER_DAY = 24 * 60


def last_full_month(settings: Settings) -> tuple[datetime, int]:
    zone = ZoneInfo(settings.billing_time_zone)
    this = month_of(datetime.now(UTC), zone)
    previous = month_of(month_start(this, zone) - timedelta(days=1), zone)
    start = month_start(previous, zone)
    return start, (month_start(this, zone) - start).days


async def vehicle(settings: Settings, *, since: datetime) -> tuple[str, str]:
    """The vehicle, its sponsors' policies (paying since `since`) and a funded driver;
    returns the driver's API key and the SIM's ICCID."""
    conn = await db.connect(settings, application_name="flowbill-bench")
    now = datetime.now(UTC)
    try:
        async with conn.transaction():
            made = {}
            for name in ("Automaker", "Map vendor", "Music provider", "Shop"):
                role = Role.MERCHANT if name == "Shop" else Role.SPONSOR
                created = await tenants.create_tenant(conn, name=name, role=role, key_label="b")
                made[name] = created.tenant.tenant_id
            driver = await tenants.create_tenant(
                conn, name="Bench driver", role=Role.DRIVER, key_label="b"
            )
            for app, category in APPS.items():
                await catalogue.set_app(conn, app=app, body=CatalogueAppUpdate(category=category))
            automaker = made["Automaker"]
            for partner in (made["Map vendor"], made["Music provider"]):
                await sponsors.allow_sponsor(conn, automaker_id=automaker, sponsor_id=partner)
            await fit(
                conn, automaker=automaker, vin="LFVBENCH000000001",
                driver_id=driver.tenant.tenant_id,
                body=VehicleUpdate(model="M1", driver_id=driver.tenant.tenant_id,
                                   iccids=[iccid_for(0)]),
                at=since,
            )  # fmt: skip
            await wallet.fund_pool(
                conn, key="bench-fund", merchant=str(made["Shop"]), data_bytes=2**40,
                price_minor=10**7, currency="CNY",
            )  # fmt: skip
            await wallet.grant(
                conn, key="bench-grant", funder=str(made["Shop"]),
                user=str(driver.tenant.tenant_id), data_bytes=20 * 1024 * MB,
                expires_at=now + timedelta(days=700), source="bench", now=now,
            )  # fmt: skip
            scope = Scope(kind=ScopeKind.AUTOMAKER, automaker_id=automaker)
            specs = [
                ("Automaker", [Category.TELEMATICS, Category.BACKEND, Category.OTA], None),
                ("Map vendor", [Category.NAVIGATION, Category.MAP_UPDATE,
                                Category.TRAFFIC_INFO], None),
                ("Music provider", [Category.MUSIC], 1024 * MB),
            ]  # fmt: skip
            for sponsor, categories, cap in specs:
                await sponsors.create_policy(
                    conn, sponsor_id=made[sponsor], key=f"bench-{sponsor}",
                    body=PolicyCreate(
                        name=sponsor, scope=scope, categories=categories, cap_bytes=cap,
                        unit_price=Decimal("0.03"), valid_from=since,
                    ),
                    now=now, open_since=since,
                )  # fmt: skip
    finally:
        await conn.close()
    return driver.key.api_key, iccid_for(0)


async def store_month(settings: Settings, iccid: str, *, start: datetime, days: int) -> int:
    """One report a minute with ten apps, a day per transaction (as ingest would, batched)."""
    conn = await db.connect(settings, application_name="flowbill-bench")
    total = 0
    try:
        for day in range(days):
            async with conn.transaction():
                cur = await conn.execute(
                    """INSERT INTO usage_items (window_start, window_end, iccid, boot, seq, app,
                                                up_bytes, down_bytes, received_at)
                       SELECT %(t)s::timestamptz + m * interval '1 minute',
                              %(t)s::timestamptz + (m + 1) * interval '1 minute',
                              %(iccid)s, 1, %(first)s + m, a.app,
                              (hashtext(a.app || m) & 16383), (hashtext(m || a.app) & 65535),
                              now()
                       FROM generate_series(0, %(n)s - 1) AS m,
                            unnest(%(apps)s::text[]) AS a(app)""",
                    {"t": start + timedelta(days=day), "iccid": iccid, "n": MINUTES_PER_DAY,
                     "first": day * MINUTES_PER_DAY, "apps": list(APPS)},
                )  # fmt: skip
                total += cur.rowcount
            print(f"  stored {total:,} items", end="\r", flush=True)
    finally:
        await conn.close()
    print()
    return total


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def line(name: str, values: list[float]) -> str:
    p50, p99 = statistics.median(values), percentile(values, 0.99)
    return f"{name:<44} p50 {p50:7.2f} ms   p99 {p99:7.2f} ms"


async def measure(base: str, key: str, month: str, requests: int) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        bearer = {"Authorization": f"Bearer {key}"}
        made = await client.post("/v1/me/sign-in-links", headers=bearer)
        made.raise_for_status()
        signed = await client.get(made.json()["url"].removeprefix(base))
        assert signed.status_code == 303, signed.text
        path = f"/driver?month={month}"
        first = await client.get(path)
        assert first.status_code == 200, first.text[:500]
        assert "usage-apps" in first.text, "the page shows no usage"
        rows = len(re.findall(r"<tr data-app=", first.text))
        print(f"page: {path}, {len(first.content):,} bytes of HTML, {rows} apps")
        server, page_round, health, wallet_round = [], [], [], []
        for _ in range(requests):
            started = time.perf_counter()
            answer = await client.get(path)
            page_round.append((time.perf_counter() - started) * 1000)
            timing = re.search(r"dur=([0-9.]+)", answer.headers["server-timing"])
            assert timing is not None
            server.append(float(timing[1]))
            started = time.perf_counter()
            await client.get("/healthz")
            health.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            await client.get("/v1/wallet", headers=bearer)
            wallet_round.append((time.perf_counter() - started) * 1000)
        print(line("baseline GET /healthz (round trip)", health))
        print(line("baseline GET /v1/wallet (round trip)", wallet_round))
        print(line("driver page (round trip)", page_round))
        print(line("driver page (server time, Server-Timing)", server))
        verdict = "yes" if percentile(server, 0.99) < 300 else "NO"
        print(f"  server time p99 under 300 ms: {verdict}")


def start_api(settings: Settings) -> tuple[subprocess.Popen[bytes], str]:
    """`flowbill serve` in a process of its own; returns it and its base URL once ready."""
    port = free_port()
    env = {**os.environ, "FLOWBILL_DATABASE_URL": settings.database_dsn,
           **settings.broker_environment(), "FLOWBILL_LOG_LEVEL": "WARNING",
           "FLOWBILL_ENVIRONMENT": "test",
           # Plain HTTP on 127.0.0.1: the session cookie must not be Secure.
           "FLOWBILL_WEB_COOKIE_SECURE": "false"}  # fmt: skip
    server = subprocess.Popen(
        [sys.executable, "-m", "cli", "serve", "--host", "127.0.0.1",
         "--port", str(port)],
        env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and server.poll() is None:
        try:
            if httpx.get(f"{base}/healthz").status_code == 200:
                return server, base
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    server.terminate()
    raise RuntimeError("the API did not start")


async def main(args: argparse.Namespace) -> None:
    state = REPO / ".state" / "bench-driver-page"
    settings = fresh_stack(state)
    server: subprocess.Popen[bytes] | None = None
    try:
        print(machine())
        start, days = last_full_month(settings)
        print(f"vehicle: 1 SIM, 10 apps, {days * MINUTES_PER_DAY:,} one-minute reports")
        key, iccid = await vehicle(settings, since=start)
        await store_month(settings, iccid, start=start, days=days)
        seconds, items, rows = await allocation_run(settings)
        print(f"allocated {items:,} items into {rows:,} allocation rows in {seconds:.1f} s")
        server, base = start_api(settings)
        await measure(
            base,
            key,
            start.astimezone(ZoneInfo(settings.billing_time_zone)).strftime("%Y-%m"),
            args.requests,
        )
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=20)
        localstack.down(state)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=200)
    asyncio.run(main(parser.parse_args()))
