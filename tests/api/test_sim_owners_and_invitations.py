"""SIM owners set by the operator, and drivers who answer their vehicles' invitations: the
normal paths over the API (the attacks are in tests/security/test_sim_ownership.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from operator import itemgetter

import httpx
import psycopg

from flowbill.settings import Settings
from tenants.schemas import Role
from tests.billing.cars import new_vin
from tests.conftest import (
    assert_bad_cursor,
    assert_each_once_in_order,
    assert_problem,
    bearer,
    make_tenant,
    new_iccid,
    walk_pages,
)
from tests.sponsors.factories import accept, fit_vehicle, own_sims


async def test_the_operator_gives_sims_an_owner_and_changes_it_with_history(
    http: httpx.AsyncClient, settings: Settings, operator_key: str
) -> None:
    operator = bearer(operator_key)
    automaker_id, automaker_key = await make_tenant(settings, role=Role.SPONSOR)
    merchant_id, _ = await make_tenant(settings, role=Role.MERCHANT)
    driver_id, _ = await make_tenant(settings, role=Role.DRIVER)
    automaker = bearer(automaker_key)
    iccid = new_iccid()
    await own_sims(http, operator_key, owner_id=automaker_id, iccids=[iccid])
    await own_sims(http, operator_key, owner_id=automaker_id, iccids=[iccid])  # the same: fine
    assert_problem(
        await http.post("/v1/operator/sims", json={"iccids": [iccid], "owner_id": merchant_id},
                        headers=operator),
        409, "sim-owned-by-another",
    )  # fmt: skip
    for owner in (driver_id, "00000000-0000-0000-0000-000000000000"):
        assert_problem(
            await http.post("/v1/operator/sims", json={"iccids": [new_iccid()], "owner_id": owner},
                            headers=operator),
            422, "invalid-sim-owner",
        )  # fmt: skip
    assert_problem(
        await http.post(f"/v1/operator/sims/{new_iccid()}/owner", json={"owner_id": merchant_id},
                        headers=operator),
        404, "sim-not-found",
    )  # fmt: skip
    past = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    assert_problem(
        await http.post(f"/v1/operator/sims/{iccid}/owner",
                        json={"owner_id": merchant_id, "effective_from": past}, headers=operator),
        422, "effective-in-the-past",
    )  # fmt: skip

    vin = new_vin()
    await fit_vehicle(
        http, operator_key, automaker_id=automaker_id, automaker=automaker, vin=vin,
        iccids=[iccid],
    )  # fmt: skip
    # A change dated later leaves the SIM where it is until then.
    later = datetime.now(UTC) + timedelta(days=30)
    changed = await http.post(
        f"/v1/operator/sims/{iccid}/owner",
        json={"owner_id": merchant_id, "effective_from": later.isoformat()}, headers=operator,
    )  # fmt: skip
    assert changed.status_code == 200, changed.text
    assert changed.json()["owner_id"] == merchant_id
    assert (await http.get(f"/v1/sponsor/vehicles/{vin}", headers=automaker)).json()["iccids"] == [
        iccid
    ]
    # Released from now: the SIM leaves the vehicle, and cannot be fitted again.
    released = await http.post(
        f"/v1/operator/sims/{iccid}/owner", json={"owner_id": None}, headers=operator
    )
    assert released.status_code == 200, released.text
    assert (await http.get(f"/v1/sponsor/vehicles/{vin}", headers=automaker)).json()["iccids"] == []
    assert_problem(
        await http.put(f"/v1/sponsor/vehicles/{vin}", json={"model": "X", "iccids": [iccid]},
                       headers=automaker),
        422, "sim-not-owned",
    )  # fmt: skip
    pages = await walk_pages(http, f"/v1/operator/sims/{iccid}/owners", key=operator_key, limit=2)
    history = [item for page in pages for item in page]
    assert [h["owner_id"] for h in history] == [automaker_id, None, merchant_id]
    assert_bad_cursor(
        await http.get(f"/v1/operator/sims/{iccid}/owners", params={"cursor": "e30"},
                       headers=operator)
    )  # fmt: skip


async def test_a_driver_accepts_declines_and_leaves_and_the_automaker_resells(
    http: httpx.AsyncClient,
    settings: Settings,
    operator_key: str,
    committed_conn: psycopg.AsyncConnection,
) -> None:
    automaker_id, automaker_key = await make_tenant(settings, role=Role.SPONSOR)
    automaker = bearer(automaker_key)
    first_id, first_key = await make_tenant(settings, role=Role.DRIVER)
    second_id, second_key = await make_tenant(settings, role=Role.DRIVER)
    first, second = bearer(first_key), bearer(second_key)
    vins = sorted(new_vin() for _ in range(3))
    for vin in vins:
        await fit_vehicle(
            http, operator_key, automaker_id=automaker_id, automaker=automaker, vin=vin,
            iccids=[new_iccid()], driver_id=first_id,
        )  # fmt: skip
    pages = await walk_pages(http, "/v1/driver/vehicle-invitations", key=first_key, limit=2)
    assert_each_once_in_order(pages, key=itemgetter("vin"), expected=vins)
    assert pages[0][0]["automaker_id"] == automaker_id
    assert_bad_cursor(
        await http.get("/v1/driver/vehicle-invitations", params={"cursor": "e30"}, headers=first)
    )

    sold, declined, kept = vins
    done = await http.post(f"/v1/driver/vehicle-invitations/{declined}/decline", headers=first)
    assert done.status_code == 204, done.text
    await accept(http, first, sold)
    await accept(http, first, kept)
    assert_problem(
        await http.post(f"/v1/driver/vehicle-invitations/{kept}/accept", headers=first),
        404, "invitation-not-found",
    )  # fmt: skip
    listed = (await http.get("/v1/driver/vehicles", headers=first)).json()["items"]
    assert [v["vehicle"]["vin"] for v in listed] == [sold, kept]
    assert listed[0]["vehicle"]["driver_id"] == first_id

    # The automaker sells one car to the second driver: the first one's link ends at once.
    body = {"model": "Aion Y", "driver_id": second_id, "iccids": []}
    resold = await http.put(f"/v1/sponsor/vehicles/{sold}", json=body, headers=automaker)
    assert resold.status_code == 200, resold.text
    assert (resold.json()["driver_id"], resold.json()["invited_driver_id"]) == (None, second_id)
    listed = (await http.get("/v1/driver/vehicles", headers=first)).json()["items"]
    assert [v["vehicle"]["vin"] for v in listed] == [kept]
    await accept(http, second, sold)
    # Naming the same driver again changes nothing.
    again = await http.put(f"/v1/sponsor/vehicles/{sold}", json=body, headers=automaker)
    assert again.json()["driver_id"] == second_id

    # The first driver leaves the other car; leaving twice finds nothing.
    left = await http.delete(f"/v1/driver/vehicles/{kept}", headers=first)
    assert left.status_code == 204, left.text
    assert_problem(
        await http.delete(f"/v1/driver/vehicles/{kept}", headers=first), 404, "vehicle-not-found"
    )
    assert (await http.get("/v1/driver/vehicles", headers=first)).json()["items"] == []

    cur = await committed_conn.execute(
        "SELECT vin, driver_id::text, accepted_at IS NOT NULL, declined_at IS NOT NULL, ended_by"
        " FROM vehicle_drivers WHERE vin = ANY(%s) ORDER BY link_id",
        (vins,),
    )
    assert await cur.fetchall() == [
        (sold, first_id, True, False, "automaker"),
        (declined, first_id, False, True, None),
        (kept, first_id, True, False, "driver"),
        (sold, second_id, True, False, None),
    ]
