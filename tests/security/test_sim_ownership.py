"""Who may fit a SIM and who pays for a vehicle, attacked over HTTP against the real stack:
a sponsor fitting SIMs it does not own, naming drivers who never agreed, naming others' SIMs
in its policies; a driver answering another driver's invitation. Each refusal changes nothing."""

from __future__ import annotations

import asyncio
import secrets
from datetime import UTC, datetime, timedelta

import httpx
import psycopg
import pytest

from billing.allocation import worker
from flowbill.settings import Settings
from flowbill.units import MB
from tenants.schemas import Role
from tests.billing.cars import Car, bill, new_vin
from tests.conftest import as_component, assert_problem, bearer, make_tenant, new_iccid
from tests.iot_cards.factories import Store, block_prefix, new_card
from tests.sponsors.factories import accept, fit_vehicle, own_sims
from tests.wallet.factories import balance_of, funded_driver, idem
from tests.web.conftest import api_key, hidden

# The ICCID of the documentation's examples: valid, and nobody provisioned it for anyone.
EXAMPLE_ICCID = "89860012345678901238"


async def sponsor(settings: Settings) -> tuple[str, dict[str, str]]:
    tenant_id, key = await make_tenant(settings, role=Role.SPONSOR)
    return tenant_id, bearer(key)


async def items(http: httpx.AsyncClient, path: str, headers: dict[str, str]) -> list[object]:
    answer = await http.get(path, headers=headers)
    assert answer.status_code == 200, answer.text
    found: list[object] = answer.json()["items"]
    return found


async def drawn_from(conn: psycopg.AsyncConnection, driver_id: str) -> int:
    """Bytes ever allocated to the driver's wallet."""
    cur = await conn.execute(
        "SELECT coalesce(sum(bytes), 0) FROM allocations"
        " WHERE payer_kind = 'wallet' AND payer_id = %s",
        (driver_id,),
    )
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def fitted_to(conn: psycopg.AsyncConnection, iccid: str) -> list[str]:
    cur = await conn.execute("SELECT vin FROM vehicle_sims WHERE iccid = %s", (iccid,))
    return [r[0] for r in await cur.fetchall()]


@pytest.mark.usefixtures("ingest_workers")
async def test_the_example_iccid_with_a_driver_who_never_agreed_is_refused(
    http: httpx.AsyncClient,
    settings: Settings,
    operator_key: str,
    committed_conn: psycopg.AsyncConnection,
) -> None:
    # The attack: one PUT fitting a SIM nobody gave the sponsor, naming a driver.
    _, attacker = await sponsor(settings)
    driver_id, driver = await funded_driver(http, settings, mb=50)
    vin = new_vin()
    answer = await http.put(
        f"/v1/sponsor/vehicles/{vin}",
        json={"model": "Stolen", "driver_id": driver_id, "iccids": [EXAMPLE_ICCID]},
        headers=attacker,
    )
    problem = assert_problem(answer, 422, "sim-not-owned")
    assert problem["iccids"] == [EXAMPLE_ICCID]
    assert_problem(
        await http.get(f"/v1/sponsor/vehicles/{vin}", headers=attacker), 404, "vehicle-not-found"
    )
    assert await items(http, "/v1/sponsor/vehicles", attacker) == []
    assert await items(http, "/v1/driver/vehicles", driver) == []
    assert await items(http, "/v1/driver/vehicle-invitations", driver) == []
    assert vin not in await fitted_to(committed_conn, EXAMPLE_ICCID)

    # The SIM's traffic stays the user's (overage, no wallet): the driver pays nothing.
    car = Car(http, settings)
    car.iccid, car.opened_at = EXAMPLE_ICCID, datetime.now(UTC)
    boot = secrets.randbelow(2**31)  # other tests may send for the same ICCID
    await car.send(committed_conn, [car.report({"video.iqiyi": 5 * MB}, boot=boot)])
    await bill(settings)
    assert await drawn_from(committed_conn, driver_id) == 0
    assert await balance_of(http, driver) == 50 * MB

    # Provisioned but given to nobody, it cannot be fitted either.
    iccid = new_iccid()
    provisioned = await http.post(
        "/v1/operator/sims", json={"iccids": [iccid]}, headers=bearer(operator_key)
    )
    assert provisioned.status_code == 200, provisioned.text
    assert_problem(
        await http.put(
            f"/v1/sponsor/vehicles/{vin}", json={"model": "Stolen", "iccids": [iccid]},
            headers=attacker,
        ),
        422, "sim-not-owned",
    )  # fmt: skip
    assert await fitted_to(committed_conn, iccid) == []


async def test_a_sponsor_cannot_fit_another_automakers_sim_nor_give_itself_one(
    http: httpx.AsyncClient,
    settings: Settings,
    operator_key: str,
    committed_conn: psycopg.AsyncConnection,
) -> None:
    a_id, a = await sponsor(settings)
    _, b = await sponsor(settings)
    theirs, mine = new_iccid(), new_iccid()
    await fit_vehicle(
        http, operator_key, automaker_id=a_id, automaker=a, vin=new_vin(), iccids=[theirs]
    )
    await own_sims(http, operator_key, owner_id=a_id, iccids=[mine])
    before = await items(http, "/v1/sponsor/sims", a)
    vin = new_vin()
    for iccids in ([theirs], [mine], [mine, new_iccid()]):
        assert_problem(
            await http.put(
                f"/v1/sponsor/vehicles/{vin}", json={"model": "X", "iccids": iccids}, headers=b
            ),
            422, "sim-not-owned",
        )  # fmt: skip
    # Only the operator gives SIMs to an owner.
    assert_problem(
        await http.post("/v1/operator/sims", json={"iccids": [mine], "owner_id": a_id},
                        headers=b),
        403, "role-not-allowed",
    )  # fmt: skip
    assert_problem(
        await http.post(f"/v1/operator/sims/{mine}/owner", json={"owner_id": a_id}, headers=b),
        403, "role-not-allowed",
    )  # fmt: skip
    assert await items(http, "/v1/sponsor/vehicles", b) == []
    assert await items(http, "/v1/sponsor/sims", a) == before
    assert await fitted_to(committed_conn, mine) == []


async def test_a_map_sponsor_cannot_name_a_foreign_sim_in_a_sims_scope(
    http: httpx.AsyncClient,
    settings: Settings,
    operator_key: str,
) -> None:
    a_id, a = await sponsor(settings)
    b_id, b = await sponsor(settings)
    map_id, map_vendor = await sponsor(settings)
    done = await http.put(f"/v1/sponsor/partners/{map_id}", headers=a)
    assert done.status_code == 204, done.text
    ours, foreign, moved = new_iccid(), new_iccid(), new_iccid()
    await fit_vehicle(
        http, operator_key, automaker_id=a_id, automaker=a, vin=new_vin(), iccids=[ours, moved]
    )
    await fit_vehicle(
        http, operator_key, automaker_id=b_id, automaker=b, vin=new_vin(), iccids=[foreign]
    )
    # The operator gives one of A's fitted SIMs to B: it leaves A's vehicle at once.
    changed = await http.post(
        f"/v1/operator/sims/{moved}/owner", json={"owner_id": b_id}, headers=bearer(operator_key)
    )
    assert changed.status_code == 200, changed.text

    def body(automaker_id: str, iccids: list[str]) -> dict[str, object]:
        return {
            "name": "maps on some cars", "categories": ["navigation"], "unit_price": "0.03",
            "scope": {"kind": "sims", "automaker_id": automaker_id, "iccids": iccids},
        }  # fmt: skip

    for iccids in ([foreign], [ours, foreign], [moved], [EXAMPLE_ICCID]):
        problem = assert_problem(
            await http.post("/v1/sponsor/policies", json=body(a_id, iccids),
                            headers=idem(map_vendor)),
            422, "sims-outside-scope",
        )  # fmt: skip
        assert problem["iccids"] == sorted(set(iccids) - {ours})
    # B never allowed the map vendor.
    assert_problem(
        await http.post("/v1/sponsor/policies", json=body(b_id, [foreign]),
                        headers=idem(map_vendor)),
        403, "scope-not-allowed",
    )  # fmt: skip
    assert await items(http, "/v1/sponsor/policies", map_vendor) == []
    # A's own SIM, through the partnership, is fine.
    made = await http.post(
        "/v1/sponsor/policies", json=body(a_id, [ours]), headers=idem(map_vendor)
    )
    assert made.status_code == 201, made.text


async def test_a_driver_cannot_answer_an_invitation_meant_for_another(
    http: httpx.AsyncClient, settings: Settings, operator_key: str
) -> None:
    a_id, a = await sponsor(settings)
    invited_id, invited_key = await make_tenant(settings, role=Role.DRIVER)
    _, other_key = await make_tenant(settings, role=Role.DRIVER)
    invited, other = bearer(invited_key), bearer(other_key)
    vin = new_vin()
    await fit_vehicle(
        http, operator_key, automaker_id=a_id, automaker=a, vin=vin, iccids=[new_iccid()],
        driver_id=invited_id,
    )  # fmt: skip
    for verb, path in (
        ("POST", f"/v1/driver/vehicle-invitations/{vin}/accept"),
        ("POST", f"/v1/driver/vehicle-invitations/{vin}/decline"),
        ("DELETE", f"/v1/driver/vehicles/{vin}"),
    ):
        answer = await http.request(verb, path, headers=other)
        assert_problem(answer, 404, "not-found" if verb == "DELETE" else "invitation-not-found")
    # Nor may the automaker answer for the driver.
    assert_problem(
        await http.post(f"/v1/driver/vehicle-invitations/{vin}/accept", headers=a),
        403, "role-not-allowed",
    )  # fmt: skip
    assert await items(http, "/v1/driver/vehicles", other) == []
    assert await items(http, "/v1/driver/vehicle-invitations", other) == []
    assert [i["vin"] for i in await items(http, "/v1/driver/vehicle-invitations", invited)] == [  # type: ignore[index]
        vin
    ]
    vehicle = (await http.get(f"/v1/sponsor/vehicles/{vin}", headers=a)).json()
    assert (vehicle["driver_id"], vehicle["invited_driver_id"]) == (None, invited_id)


async def sign_in(browser: httpx.AsyncClient, driver: dict[str, str]) -> None:
    """Sign a browser (its own cookie jar) in to the driver page with the driver's key."""
    csrf = hidden((await browser.get("/sign-in")).text, "csrf")
    done = await browser.post("/sign-in", data={"csrf": csrf, "api_key": api_key(driver)})
    assert done.status_code == 303, done.text


@pytest.mark.usefixtures("ingest_workers")
async def test_the_wallet_pays_only_while_the_driver_has_accepted(
    api_url: str,
    http: httpx.AsyncClient,
    settings: Settings,
    operator_key: str,
    committed_conn: psycopg.AsyncConnection,
) -> None:
    car = await Car(http, settings).open(operator_key, wallet_mb=100, accept=False)
    await car.send(committed_conn, [car.report({"wifi.hotspot": 30 * MB})])
    await bill(settings)
    # Invited, not accepted: the user's share is overage of nobody's wallet, and coverage
    # says nothing of a wallet.
    assert await car.paid(committed_conn) == {("overage", None): 30 * MB}
    assert await balance_of(http, car.driver) == 100 * MB
    coverage = await car.coverage()
    assert "wallet_has_data" not in coverage
    assert coverage["other_apps"] == {"payer": "blocked"}
    assert await items(http, "/v1/driver/vehicles", car.driver) == []
    async with httpx.AsyncClient(base_url=api_url, timeout=10) as browser:
        await sign_in(browser, car.driver)
        page = (await browser.get("/driver")).text
        assert car.iccid not in page
        assert (await browser.get(f"/driver/sims/{car.iccid}")).status_code == 404
        # The page offers the invitation; a forged answer is refused, the real one accepts.
        action = f"/driver/vehicle-invitations/{car.vin}/accept"
        assert action in page
        form = {"csrf": hidden(page, "csrf"), "idempotency_key": hidden(page, "idempotency_key")}
        forged = await browser.post(action, data={**form, "csrf": "x" * 43})
        assert forged.status_code == 403
        assert await items(http, "/v1/driver/vehicles", car.driver) == []
        accepted = await browser.post(action, data=form)
        assert accepted.status_code == 303, accepted.text
    assert await items(http, "/v1/driver/vehicle-invitations", car.driver) == []
    await car.send(committed_conn, [car.report({"wifi.hotspot": 20 * MB})])
    await bill(settings)
    assert await car.paid(committed_conn) == {
        ("overage", None): 30 * MB, ("wallet", car.driver_id): 20 * MB,
    }  # fmt: skip
    assert (await car.coverage())["wallet_has_data"] is True
    async with httpx.AsyncClient(base_url=api_url, timeout=10) as browser:
        await sign_in(browser, car.driver)
        assert (await browser.get(f"/driver/sims/{car.iccid}")).status_code == 200

    # The driver ends the link: from then on the wallet pays nothing more.
    left = await http.delete(f"/v1/driver/vehicles/{car.vin}", headers=car.driver)
    assert left.status_code == 204, left.text
    await car.send(committed_conn, [car.report({"wifi.hotspot": 10 * MB})])
    await bill(settings)
    assert await car.paid(committed_conn) == {
        ("overage", None): 40 * MB, ("wallet", car.driver_id): 20 * MB,
    }  # fmt: skip
    assert await balance_of(http, car.driver) == 80 * MB
    assert await items(http, "/v1/driver/vehicles", car.driver) == []


async def owners_of(http: httpx.AsyncClient, operator_key: str, iccid: str) -> list[object]:
    return [
        o["owner_id"]  # type: ignore[index]
        for o in await items(http, f"/v1/operator/sims/{iccid}/owners", bearer(operator_key))
    ]


async def merchants_of(conn: psycopg.AsyncConnection, iccids: list[str]) -> dict[str, object]:
    cur = await conn.execute(
        "SELECT iccid, merchant_id::text FROM iot_cards WHERE iccid = ANY(%s)", (iccids,)
    )
    return dict(await cur.fetchall())


async def test_a_card_block_makes_its_merchant_the_owner_and_never_takes_another_tenants_sims(
    http: httpx.AsyncClient,
    settings: Settings,
    operator_key: str,
    committed_conn: psycopg.AsyncConnection,
) -> None:
    store = await Store(http, settings, operator_key).open(cards=2)
    for iccid, _, _ in store.cards:
        assert await owners_of(http, operator_key, iccid) == [store.merchant_id]

    # Cards imported as an automaker's SIMs are its own from the import on …
    automaker_id, automaker = await sponsor(settings)
    prefix = block_prefix()
    cards = [new_card(prefix, n) for n in range(2)]
    iccids = [c[0] for c in cards]
    imported = await http.post(
        "/v1/operator/iot/card-imports",
        params={"carrier": "cmcc-iot", "owner_id": automaker_id},
        content=("iccid,imsi,msisdn\n" + "".join(f"{a},{b},{c}\n" for a, b, c in cards)).encode(),
        headers={**bearer(operator_key), "Content-Type": "text/csv"},
    )
    assert imported.status_code == 201, imported.text
    for iccid in iccids:
        assert await owners_of(http, operator_key, iccid) == [automaker_id]
    # … so a block of them given to a merchant is refused whole and nothing moves.
    merchant_id, _ = await make_tenant(settings, role=Role.MERCHANT)
    refused = await http.post(
        "/v1/operator/iot/card-assignments",
        json={"merchant_id": merchant_id, "first_iccid": iccids[0], "last_iccid": iccids[-1]},
        headers=bearer(operator_key),
    )
    assert_problem(refused, 409, "sim-owned-by-another")
    assert await merchants_of(committed_conn, iccids) == dict.fromkeys(iccids)
    for iccid in iccids:
        assert await owners_of(http, operator_key, iccid) == [automaker_id]
    # An import naming an owner that is no automaker or merchant imports nothing.
    driver_id, _ = await make_tenant(settings, role=Role.DRIVER)
    more = [new_card(block_prefix(), 0)]
    answer = await http.post(
        "/v1/operator/iot/card-imports",
        params={"carrier": "cmcc-iot", "owner_id": driver_id},
        content=f"iccid,imsi,msisdn\n{more[0][0]},{more[0][1]},{more[0][2]}\n".encode(),
        headers={**bearer(operator_key), "Content-Type": "text/csv"},
    )
    assert_problem(answer, 422, "invalid-sim-owner")
    assert await merchants_of(committed_conn, [more[0][0]]) == {}
    # The automaker may fit them: they are its SIMs.
    await fit_vehicle_owned(http, automaker, new_vin(), iccids)


async def fit_vehicle_owned(
    http: httpx.AsyncClient, automaker: dict[str, str], vin: str, iccids: list[str]
) -> None:
    fitted = await http.put(
        f"/v1/sponsor/vehicles/{vin}", json={"model": "Aion Y", "iccids": iccids},
        headers=automaker,
    )  # fmt: skip
    assert fitted.status_code == 200, fitted.text


@pytest.mark.usefixtures("ingest_workers")
async def test_a_later_owner_change_takes_the_sim_out_of_the_vehicle_when_it_takes_effect(
    http: httpx.AsyncClient,
    settings: Settings,
    operator_key: str,
    committed_conn: psycopg.AsyncConnection,
) -> None:
    car = await Car(http, settings).open(operator_key, wallet_mb=100)
    await bill(settings)
    assert (await car.coverage())["wallet_has_data"] is True
    new_owner_id, new_owner = await sponsor(settings)
    at = datetime.now(UTC) + timedelta(seconds=3)
    changed = await http.post(
        f"/v1/operator/sims/{car.iccid}/owner",
        json={"owner_id": new_owner_id, "effective_from": at.isoformat()},
        headers=bearer(operator_key),
    )
    assert changed.status_code == 200, changed.text
    # Until it takes effect the SIM stays in the car, and the new owner cannot fit it yet.
    await bill(settings)
    assert await fitted_to(committed_conn, car.iccid) == [car.vin]
    early = await http.put(
        f"/v1/sponsor/vehicles/{new_vin()}", json={"model": "X", "iccids": [car.iccid]},
        headers=new_owner,
    )  # fmt: skip
    assert_problem(early, 422, "sim-not-owned")

    await asyncio.sleep(max(0.0, (at - datetime.now(UTC)).total_seconds()) + 0.1)
    await car.send(committed_conn, [car.report({"wifi.hotspot": 10 * MB})])
    await bill(settings)
    # Taken out of the car before its usage was allocated: the wallet pays nothing of it,
    # the device is told nobody pays, and the new owner may fit it.
    assert await fitted_to(committed_conn, car.iccid) == []
    assert await car.paid(committed_conn) == {("overage", None): 10 * MB}
    assert await balance_of(http, car.driver) == 100 * MB
    assert (await car.coverage())["other_apps"] == {"payer": "blocked", "reason": "not_fitted"}
    assert await items(http, "/v1/driver/vehicles", car.driver) != []  # the car, without it
    await fit_vehicle_owned(http, new_owner, new_vin(), [car.iccid])
    assert await owners_of(http, operator_key, car.iccid) == [car.automaker_id, new_owner_id]


async def test_coverage_follows_the_drivers_answer_and_owner_changes_at_the_next_quick_look(
    http: httpx.AsyncClient, settings: Settings, operator_key: str
) -> None:
    # The billing loop looks every few seconds; one look (not the full pass) must see them.
    car = await Car(http, settings).open(operator_key, wallet_mb=100, accept=False)
    async with worker.biller(as_component(settings, "billing")) as biller:
        await biller.refresh_coverage(force_all=True)
        assert "wallet_has_data" not in await car.coverage()
        await accept(http, car.driver, car.vin)
        await biller.refresh_coverage()
        assert (await car.coverage())["wallet_has_data"] is True
        left = await http.delete(f"/v1/driver/vehicles/{car.vin}", headers=car.driver)
        assert left.status_code == 204, left.text
        await biller.refresh_coverage()
        coverage = await car.coverage()
        assert "wallet_has_data" not in coverage
        assert coverage["other_apps"] == {"payer": "blocked"}
        released = await http.post(
            f"/v1/operator/sims/{car.iccid}/owner", json={"owner_id": None},
            headers=bearer(operator_key),
        )  # fmt: skip
        assert released.status_code == 200, released.text
        await biller.refresh_coverage()
        coverage = await car.coverage()
        assert coverage["other_apps"] == {"payer": "blocked", "reason": "not_fitted"}
        assert coverage["apps"] == {}
