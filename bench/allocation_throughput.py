"""Allocation benchmark: usage items allocated per second by the billing run, against a
baseline measured in the same run on the same database.

The fleet: SIMs in vehicles of one automaker, each with a driver (a tenth of them with data in
their wallets); the automaker pays telematics, backend and OTA, a map vendor navigation, map
updates and traffic, a music provider music up to a cap per SIM, the rest is the drivers'.
Items are stored as the ingest workers store them: a few thousand per transaction.

Baseline: the same items read with the same query, and the same number of rows written into
an identical allocations table, batch by batch, with no logic (and no spend, wallet or cursor
writes). The run: `AllocationRun.batch` until nothing is left, as `flowbill bill` does.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from uuid import UUID

from throwaway_stack import fresh_stack, machine

from billing.allocation import repository as billing_repository
from billing.allocation.batches import AllocationRun
from devstack import localstack
from flowbill import db
from flowbill.settings import Settings
from flowbill.units import MB
from ingest import service as metering
from ingest.repository import StagedReport, store_reports
from sponsors import catalogue, ownership
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
APPS = {
    "telematics": Category.TELEMATICS, "backend.sync": Category.BACKEND,
    "ota.fota": Category.OTA, "nav.amap": Category.NAVIGATION,
    "mapupdate.amap": Category.MAP_UPDATE, "traffic.amap": Category.TRAFFIC_INFO,
    "music.qq": Category.MUSIC, "fm.radio": Category.FM, "video.iqiyi": Category.VIDEO,
    "wifi.hotspot": Category.WIFI_HOTSPOT,
}  # fmt: skip


def iccid_for(n: int) -> str:
    from ingest.protocol import iccid_check_digit

    body = f"8986{n:015d}"
    return body + iccid_check_digit(body)


async def fit(
    conn: db.Connection,
    *,
    automaker: UUID,
    vin: str,
    driver_id: UUID,
    body: VehicleUpdate,
    at: datetime,
) -> None:
    """As the platform does it: the operator provisions the SIMs owned by the automaker, which
    fits them and names the driver, who accepts (all at `at`)."""
    await metering.provision_sims(conn, body.iccids, label="bench")
    await ownership.assign_provisioned(conn, body.iccids, owner_id=automaker, now=at)
    await sponsors.put_vehicle(conn, automaker_id=automaker, vin=vin, body=body, now=at)
    await ownership.accept(conn, driver_id=driver_id, vin=vin, now=at)


async def fleet(settings: Settings, sims: int) -> datetime:
    """Tenants, catalogue, vehicles and policies; returns when the policies start paying."""
    conn = await db.connect(settings, application_name="flowbill-bench")
    now = datetime.now(UTC)
    try:
        async with conn.transaction():
            made = {}
            for name in ("automaker", "map vendor", "music provider", "shop"):
                role = Role.MERCHANT if name == "shop" else Role.SPONSOR
                created = await tenants.create_tenant(conn, name=name, role=role, key_label="b")
                made[name] = created.tenant.tenant_id
            for app, category in APPS.items():
                await catalogue.set_app(conn, app=app, body=CatalogueAppUpdate(category=category))
            automaker = made["automaker"]
            for partner in (made["map vendor"], made["music provider"]):
                await sponsors.allow_sponsor(conn, automaker_id=automaker, sponsor_id=partner)
            await wallet.fund_pool(
                conn, key="bench-fund", merchant=str(made["shop"]), data_bytes=2**50,
                price_minor=10**9, currency="CNY",
            )  # fmt: skip
            for n in range(sims):
                driver = await tenants.create_tenant(
                    conn, name=f"driver {n}", role=Role.DRIVER, key_label="b"
                )
                driver_id = driver.tenant.tenant_id
                await fit(
                    conn, automaker=automaker, vin=f"LFV{n:014d}", driver_id=driver_id,
                    body=VehicleUpdate(model="M1" if n % 2 else "M2", driver_id=driver_id,
                                       iccids=[iccid_for(n)]),
                    at=now,
                )  # fmt: skip
                if n % 10 == 0:
                    await wallet.grant(
                        conn, key=f"bench-grant-{n}", funder=str(made["shop"]),
                        user=str(driver_id), data_bytes=200 * MB,
                        expires_at=now + timedelta(days=700), source="bench", now=now,
                    )  # fmt: skip
            scope = Scope(kind=ScopeKind.AUTOMAKER, automaker_id=automaker)
            specs = [
                ("automaker", [Category.TELEMATICS, Category.BACKEND, Category.OTA], None, None),
                ("map vendor", [Category.NAVIGATION, Category.MAP_UPDATE,
                                Category.TRAFFIC_INFO], None, 10**7),
                ("music provider", [Category.MUSIC], 1024 * MB, None),
            ]  # fmt: skip
            for sponsor, categories, cap, budget_minor in specs:
                await sponsors.create_policy(
                    conn, sponsor_id=made[sponsor], key=f"bench-{sponsor}",
                    body=PolicyCreate(
                        name=sponsor, scope=scope, categories=categories, cap_bytes=cap,
                        budget_minor=budget_minor, unit_price=Decimal("0.03"),
                    ),
                    now=now, open_since=now,
                )  # fmt: skip
    finally:
        await conn.close()
    return now + timedelta(seconds=1)


async def store_items(settings: Settings, *, sims: int, minutes: int, start: datetime) -> int:
    """Items as ingest stores them: one transaction per 200 reports (2,000 items)."""
    conn = await db.connect(settings, application_name="flowbill-bench")
    apps = list(APPS)
    total = 0
    try:
        for minute in range(minutes):
            for first in range(0, sims, 200):
                async with conn.transaction():
                    cur = await conn.execute(
                        """INSERT INTO usage_items (window_start, window_end, iccid, boot, seq, app,
                                                    up_bytes, down_bytes, received_at)
                           SELECT %(t)s::timestamptz, %(t)s::timestamptz + interval '1 minute',
                                  i.iccid, 1, %(seq)s, a.app,
                                  (hashtext(i.iccid || a.app || %(seq)s) & 65535),
                                  (hashtext(a.app || i.iccid || %(seq)s) & 1048575) * 4,
                                  now()
                           FROM unnest(%(iccids)s::text[]) AS i(iccid),
                                unnest(%(apps)s::text[]) AS a(app)""",
                        {
                            "t": start + timedelta(minutes=minute), "seq": minute,
                            "iccids": [iccid_for(n) for n in range(first, min(first + 200, sims))],
                            "apps": apps,
                        },
                    )  # fmt: skip
                    total += cur.rowcount
            print(f"  stored {total:,} items", end="\r", flush=True)
    finally:
        await conn.close()
    print()
    return total


async def baseline(settings: Settings, *, batch_items: int, rows_per_item: float) -> float:
    """Seconds to read every item and write as many allocation-shaped rows, batch by batch."""
    conn = await db.connect(settings, application_name="flowbill-bench")
    try:
        async with conn.transaction():
            await conn.execute("CREATE TABLE bench_allocations (LIKE allocations INCLUDING ALL)")
            await conn.execute(
                "SELECT create_hypertable('bench_allocations', 'window_start',"
                " chunk_time_interval => interval '7 days', create_default_indexes => false)"
            )
        started = time.perf_counter()
        async with conn.transaction():
            horizon = (await (await conn.execute(
                "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint"
            )).fetchone())[0]  # type: ignore[index]  # fmt: skip
            counts = await billing_repository.items_per_transaction(
                conn, from_xid=0, until_xid=horizon
            )
        position = 0
        while position < len(counts):
            taken, end = 0, position
            while end < len(counts) and (taken == 0 or taken + counts[end][1] <= batch_items):
                taken += counts[end][1]
                end += 1
            async with conn.transaction():
                rows = await billing_repository.items(
                    conn, from_xid=counts[position][0], to_xid=counts[end - 1][0]
                )
                copies = int(len(rows) * rows_per_item)
                out = [
                    (r[0], r[1], r[2], r[3], r[4], "music", r[0].date(), "overage", None, None,
                     None, r[5] or 1, False, 0)
                    for r in rows
                ]  # fmt: skip
                out += out[: copies - len(out)]
                async with (
                    conn.cursor() as cur,
                    cur.copy(
                        "COPY bench_allocations (window_start, iccid, boot, seq, app, category,"
                        " period, payer_kind, payer_id, policy_id, terms_from, bytes, adjustment,"
                        " batch_id) FROM STDIN (FORMAT BINARY)"
                    ) as copy,
                ):
                    copy.set_types(
                        ["timestamptz", "text", "int4", "int8", "text", "text", "date", "text",
                         "uuid", "int8", "timestamptz", "int8", "bool", "int8"]
                    )  # fmt: skip
                    for row in out:
                        await copy.write_row(row)
            position = end
        return time.perf_counter() - started
    finally:
        await conn.close()


async def allocation_run(settings: Settings) -> tuple[float, int, int]:
    """Seconds, items and allocation rows of the run until nothing is left."""
    conn = await db.connect(settings, application_name="flowbill-bench")
    reader = await db.connect(settings, application_name="flowbill-bench-reader")
    await reader.set_autocommit(True)
    run = AllocationRun(settings, reader=reader)
    items = rows = 0
    try:
        started = time.perf_counter()
        while True:
            async with conn.transaction():
                outcome = await run.batch(conn, now=datetime.now(UTC))
            assert outcome is not None
            items += outcome.items
            rows += outcome.allocations
            print(f"  allocated {items:,} items", end="\r", flush=True)
            if not outcome.more and outcome.items == 0:
                break
        print()
        return time.perf_counter() - started, items, rows
    finally:
        await run.close()
        await reader.close()
        await conn.close()


async def ingest_store(settings: Settings, *, sims: int, minutes: int, start: datetime) -> float:
    """Items per second of the ingest workers' own store step (`store_reports`: dedup per
    report, items, rollups, boots) over a fleet like the one allocated, in transactions of
    200 reports as the workers commit them: what the run must keep up with, without MQTT."""
    conn = await db.connect(settings, application_name="flowbill-bench")
    apps = list(APPS)
    items = 0
    try:
        started = time.perf_counter()
        for minute in range(minutes):
            at = start + timedelta(minutes=minute)
            for first in range(0, sims, 200):
                batch = [
                    StagedReport(
                        iccid=iccid_for(n), boot=2, seq=minute, window_start=at,
                        window_end=at + timedelta(minutes=1), apps=apps,
                        ups=[1000 + n] * len(apps), downs=[5000 + n] * len(apps),
                        received_at=datetime.now(UTC),
                    )
                    for n in range(first, min(first + 200, sims))
                ]  # fmt: skip
                async with conn.transaction():
                    items += (await store_reports(conn, batch)).items
        return items / (time.perf_counter() - started)
    finally:
        await conn.close()


async def check(settings: Settings, items: int) -> str:
    conn = await db.connect(settings, application_name="flowbill-bench")
    try:
        cur = await conn.execute(
            "SELECT (SELECT sum(up_bytes + down_bytes) FROM usage_items),"
            " (SELECT sum(bytes) FROM allocations), (SELECT count(*) FROM usage_items)"
        )
        stored, allocated, count = await cur.fetchone()  # type: ignore[misc]
        ok = stored == allocated and count == items
        return f"stored bytes {stored:,} = allocated bytes {allocated:,}: {'yes' if ok else 'NO'}"
    finally:
        await conn.close()


async def main(args: argparse.Namespace) -> None:
    state = REPO / ".state" / "bench-allocation"
    settings = fresh_stack(state)
    if args.batch is not None:
        settings = settings.model_copy(update={"billing_batch_items": args.batch})
    try:
        print(machine())
        print(f"fleet: {args.sims:,} SIMs, 10 apps, {args.minutes} one-minute reports each;"
              f" batches of {settings.billing_batch_items:,} items")  # fmt: skip
        start = await fleet(settings, args.sims)
        stored = await store_items(settings, sims=args.sims, minutes=args.minutes, start=start)
        # The baseline writes as many rows as the run will (measured on a first, small run
        # would change the state: the ratio of a car fleet is about 1.05 rows per item).
        seconds, items, rows = await allocation_run(settings)
        base = await baseline(
            settings, batch_items=settings.billing_batch_items, rows_per_item=rows / items
        )
        print(f"items: {stored:,}; allocation rows: {rows:,} ({rows / items:.3f} per item)")
        print(f"baseline (read items, write rows, no logic): {stored / base:>10,.0f} items/s")
        rate = items / seconds
        print(f"allocation run:                              {rate:>10,.0f} items/s")
        print(f"  = {rate / (stored / base):.2f}x the baseline; target: 100,000 items/s")
        print(await check(settings, items))
        ingest_rate = await ingest_store(
            settings, sims=args.sims, minutes=max(args.minutes // 3, 1), start=start
        )
        print(f"ingest's store step on the same fleet:        {ingest_rate:>10,.0f} items/s"
              f"  (the run keeps up: {'yes' if rate >= ingest_rate else 'NO'},"
              f" {rate / ingest_rate:.2f}x)")  # fmt: skip
    finally:
        localstack.down(state)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sims", type=int, default=2000)
    parser.add_argument("--minutes", type=int, default=30)
    parser.add_argument(
        "--batch", type=int, default=None, help="items per batch (default: the settings' default)"
    )
    asyncio.run(main(parser.parse_args()))
