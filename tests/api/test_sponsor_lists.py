"""The sponsors' lists, the driver's vehicles and the operator's catalogue and tariffs, paged."""

from __future__ import annotations

import secrets
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from operator import itemgetter

import httpx

from billing.documents import tariffs
from billing.documents.schemas import TariffCreate
from flowbill import db
from flowbill.db import Connection
from flowbill.periods import format_period
from flowbill.settings import Settings
from sponsors import service as sponsors
from tenants.schemas import Role
from tests.conftest import (
    assert_bad_cursor,
    assert_each_once_in_order,
    bearer,
    make_tenant,
    new_iccid,
    walk_pages,
)
from tests.sponsors.factories import fit_vehicle

VIN_ALPHABET = "ABCDEFGHJKLMNPRSTUVWXYZ0123456789"


def new_vin() -> str:
    return "".join(secrets.choice(VIN_ALPHABET) for _ in range(17))


async def put_vehicle(
    http: httpx.AsyncClient,
    operator_key: str,
    automaker: tuple[str, str],
    *,
    driver: tuple[str, str] | None = None,
) -> tuple[str, str]:
    """A new vehicle of the automaker (id, key) with one SIM it owns, accepted by the driver
    (id, key) if given; returns (VIN, ICCID)."""
    vin, iccid = new_vin(), new_iccid()
    await fit_vehicle(
        http, operator_key, automaker_id=automaker[0], automaker=bearer(automaker[1]), vin=vin,
        iccids=[iccid], driver_id=driver and driver[0], driver=driver and bearer(driver[1]),
    )  # fmt: skip
    return vin, iccid


async def test_the_catalogue_pages_for_operators_and_sponsors(
    http: httpx.AsyncClient, settings: Settings, operator_key: str
) -> None:
    prefix = f"paged{secrets.token_hex(4)}"
    apps = [f"{prefix}.{n}" for n in range(5)]
    for app in apps:
        put = await http.put(
            f"/v1/operator/catalogue/apps/{app}", json={"category": "music"},
            headers=bearer(operator_key),
        )  # fmt: skip
        assert put.status_code == 200, put.text
    _, sponsor = await make_tenant(settings, role=Role.SPONSOR)
    for path, key in (
        ("/v1/operator/catalogue/apps", operator_key),
        ("/v1/sponsor/catalogue", sponsor),
    ):
        pages = await walk_pages(http, path, key=key, limit=3)
        assert_each_once_in_order(pages, key=itemgetter("app"), expected=apps)
        assert_bad_cursor(await http.get(path, params={"cursor": "e30"}, headers=bearer(key)))


async def test_vehicles_sims_partners_and_policies_page(
    http: httpx.AsyncClient, settings: Settings, operator_key: str
) -> None:
    automaker_id, automaker = await make_tenant(settings, role=Role.SPONSOR)
    fitted = sorted(
        [await put_vehicle(http, operator_key, (automaker_id, automaker)) for _ in range(5)]
    )
    pages = await walk_pages(http, "/v1/sponsor/vehicles", key=automaker, limit=2)
    assert [len(page) for page in pages] == [2, 2, 1]
    assert_each_once_in_order(pages, key=itemgetter("vin"), expected=[v for v, _ in fitted])
    pages = await walk_pages(http, "/v1/sponsor/sims", key=automaker, limit=2)
    assert_each_once_in_order(pages, key=itemgetter("iccid"), expected=sorted(i for _, i in fitted))

    partners = [(await make_tenant(settings, role=Role.SPONSOR))[0] for _ in range(3)]
    for partner in partners:
        allowed = await http.put(f"/v1/sponsor/partners/{partner}", headers=bearer(automaker))
        assert allowed.status_code == 204, allowed.text
    pages = await walk_pages(http, "/v1/sponsor/partners", key=automaker, limit=2)
    assert_each_once_in_order(pages, key=itemgetter("sponsor_id"), expected=partners)

    made = []
    for n in range(3):
        created = await http.post(
            "/v1/sponsor/policies",
            json={"name": f"policy {n}", "categories": ["music"], "unit_price": "0.05",
                  "scope": {"kind": "automaker", "automaker_id": automaker_id}},
            headers={**bearer(automaker), "Idempotency-Key": f"paged-{n}"},
        )  # fmt: skip
        assert created.status_code == 201, created.text
        made.append(created.json()["policy_id"])
    pages = await walk_pages(http, "/v1/sponsor/policies", key=automaker, limit=2)
    assert_each_once_in_order(pages, key=itemgetter("policy_id"), expected=made)

    # What the allocation run records against the first policy's cap, per SIM.
    period = date.today().replace(day=1)
    conn = await db.connect(settings, application_name="flowbill-test")
    try:
        async with conn.transaction():
            await sponsors.record_spend(
                conn,
                [],
                [(made[0], period, iccid, 1000 + n) for n, (_, iccid) in enumerate(fitted)],
            )
    finally:
        await conn.close()
    path = f"/v1/sponsor/policies/{made[0]}/caps"
    pages = await walk_pages(
        http, path, key=automaker, limit=2, params={"period": format_period(period)}
    )
    assert_each_once_in_order(pages, key=itemgetter("iccid"), expected=sorted(i for _, i in fitted))
    assert {c["cap_bytes"] for p in pages for c in p} == {None}

    for path in (
        "/v1/sponsor/vehicles",
        "/v1/sponsor/sims",
        "/v1/sponsor/partners",
        "/v1/sponsor/policies",
    ):
        assert_bad_cursor(await http.get(path, params={"cursor": "e30"}, headers=bearer(automaker)))
    assert_bad_cursor(
        await http.get(
            f"/v1/sponsor/policies/{made[0]}/caps",
            params={"period": format_period(period), "cursor": "e30"}, headers=bearer(automaker),
        )
    )  # fmt: skip


async def test_a_driver_pages_through_their_vehicles(
    http: httpx.AsyncClient, settings: Settings, operator_key: str
) -> None:
    maker = await make_tenant(settings, role=Role.SPONSOR)
    driver_id, driver = await make_tenant(settings, role=Role.DRIVER)
    owned = sorted(
        [await put_vehicle(http, operator_key, maker, driver=(driver_id, driver)) for _ in range(3)]
    )
    await put_vehicle(http, operator_key, maker)  # someone else's
    pages = await walk_pages(http, "/v1/driver/vehicles", key=driver, limit=2)
    assert [[v["vehicle"]["vin"] for v in page] for page in pages] == [
        [owned[0][0], owned[1][0]], [owned[2][0]],
    ]  # fmt: skip
    assert pages[1][0]["coverage"] == {owned[2][1]: None}
    assert_bad_cursor(
        await http.get("/v1/driver/vehicles", params={"cursor": "e30"}, headers=bearer(driver))
    )


async def test_tariffs_page_oldest_first(
    conn: Connection, http: httpx.AsyncClient, operator_key: str
) -> None:
    # Tariffs of this transaction only (rolled back), so that no other test is rated by them.
    now = datetime.now(UTC)
    for days in (1000, 2000, 3000):
        await tariffs.add_tariff(
            conn, body=TariffCreate(
                effective_from=now + timedelta(days=days), wholesale_per_mb=Decimal("0.03"),
                overage_per_mb=Decimal("0.29"),
            ),
            now=now,
        )  # fmt: skip
    every = [t.effective_from for t in await tariffs.tariffs(conn)]
    assert len(every) >= 4
    seen: list[datetime] = []
    cursor: str | None = None
    while True:
        page = await tariffs.tariff_page(conn, limit=2, cursor=cursor)
        seen += [t.effective_from for t in page.items]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == every

    listed = await http.get(
        "/v1/operator/tariffs", params={"limit": 1}, headers=bearer(operator_key)
    )
    assert listed.json()["items"][0]["effective_from"].startswith("2000-01-01")
    assert_bad_cursor(
        await http.get(
            "/v1/operator/tariffs", params={"cursor": "e30"}, headers=bearer(operator_key)
        )
    )


async def test_price_floors_page_in_the_order_they_were_set(
    http: httpx.AsyncClient, settings: Settings, operator_key: str
) -> None:
    sponsor_id, _ = await make_tenant(settings, role=Role.SPONSOR)
    path = f"/v1/operator/price-floors/CNY/{{}}/sponsors/{sponsor_id}"
    made = []
    for category, price in [("music", "0.05"), ("fm", "0.04"), ("video", "0.03"), ("ota", "1")]:
        put = await http.put(
            path.format(category), json={"min_unit_price": price}, headers=bearer(operator_key)
        )
        assert put.status_code == 200, put.text
        made.append(put.json()["floor_id"])
    mine = await walk_pages(
        http, "/v1/operator/price-floors", key=operator_key, limit=3,
        params={"sponsor_id": sponsor_id},
    )  # fmt: skip
    assert [f["floor_id"] for page in mine for f in page] == made
    every = await walk_pages(http, "/v1/operator/price-floors", key=operator_key, limit=5)
    assert_each_once_in_order(every, key=itemgetter("floor_id"), expected=made)
    # The seeded rate card comes first: every category at 0.001 CNY per MB.
    seeded = [f for f in every[0] + every[1] + every[2] if f["sponsor_id"] is None][:11]
    assert {(f["currency"], f["min_unit_price"]) for f in seeded} == {("CNY", "0.001000")}
    assert len({f["category"] for f in seeded}) == 11
    assert_bad_cursor(
        await http.get(
            "/v1/operator/price-floors", params={"cursor": "e30"}, headers=bearer(operator_key)
        )
    )
