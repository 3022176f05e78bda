"""The allocation run end to end: reports over MQTT into the ingest workers, policies over
the API, `flowbill bill` over the database, coverage back over MQTT."""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import httpx
import psycopg
import pytest

from billing.allocation import batches, worker
from flowbill.settings import Settings
from flowbill.units import MB
from tests.billing.cars import GB, Car, bill
from tests.conftest import REPO, IngestProcess, assert_problem, bearer, new_iccid
from tests.wallet.factories import Shop, balance_of

pytestmark = pytest.mark.usefixtures("ingest_workers")


@pytest.fixture(params=["one chunk", "one item per chunk"])
def chunking(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """The run's batches computed and stored in one chunk, or in chunks of a single item (so
    caps, budgets and wallets carry across chunks inside a batch)."""
    if request.param == "one item per chunk":
        monkeypatch.setattr(batches, "CHUNK_ITEMS", 1)


async def rows_of(conn: psycopg.AsyncConnection, iccid: str) -> int:
    cur = await conn.execute("SELECT count(*) FROM allocations WHERE iccid = %s", (iccid,))
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def stored_bytes(conn: psycopg.AsyncConnection, iccid: str) -> int:
    cur = await conn.execute(
        "SELECT coalesce(sum(up_bytes + down_bytes), 0) FROM usage_items WHERE iccid = %s",
        (iccid,),
    )
    row = await cur.fetchone()
    return int(row[0]) if row else 0


@pytest.mark.usefixtures("chunking")
async def test_the_car_scenario_pays_each_app_to_its_sponsor_and_the_rest_from_the_wallet(
    http: httpx.AsyncClient,
    settings: Settings,
    operator_key: str,
    committed_conn: psycopg.AsyncConnection,
) -> None:
    car = await Car(http, settings).open(operator_key, wallet_mb=100)
    await car.send(
        committed_conn,
        [
            car.report({"telematics": 10 * MB, "nav.amap": 20 * MB, "music.qq": 30 * MB}),
            car.report({"wifi.hotspot": 50 * MB, "video.iqiyi": 80 * MB, "some.new.app": MB}),
        ],
    )
    await bill(settings)

    assert await car.paid(committed_conn) == {
        ("sponsor", car.automaker_id): 10 * MB,
        ("sponsor", car.map_vendor_id): 20 * MB,
        ("sponsor", car.music_id): 30 * MB,
        ("wallet", car.driver_id): 100 * MB,
        ("overage", car.driver_id): 31 * MB,
    }
    assert sum((await car.paid(committed_conn)).values()) == await stored_bytes(
        committed_conn, car.iccid
    )
    assert await balance_of(http, car.driver) == 0
    # The daily rollup the pages read sums to the same rows.
    cur = await committed_conn.execute(
        "SELECT payer_kind, payer_id::text, sum(bytes) FROM allocation_daily WHERE iccid = %s"
        " GROUP BY 1, 2",
        (car.iccid,),
    )
    assert {(k, p): int(b) for k, p, b in await cur.fetchall()} == await car.paid(committed_conn)
    cur = await committed_conn.execute(
        "SELECT count(*), count(DISTINCT (day, app, payer_kind, payer_id)) FROM allocation_daily"
        " WHERE iccid = %s",
        (car.iccid,),
    )
    rows, keys = await cur.fetchone()  # type: ignore[misc]
    assert rows == keys  # `bill --once` compacts what the batches appended

    coverage = await car.coverage()
    assert coverage["apps"]["telematics"] == {
        "payer": "sponsor", "sponsor_id": car.automaker_id,
        "policy_id": car.policies["telematics"]["policy_id"],
    }  # fmt: skip
    assert coverage["apps"]["nav.amap"]["sponsor_id"] == car.map_vendor_id
    assert coverage["apps"]["music.qq"]["sponsor_id"] == car.music_id
    assert {"wifi.hotspot", "video.iqiyi"} <= set(coverage["blocked"])
    assert coverage["other_apps"] == {"payer": "blocked"}

    # A rerun changes nothing: every item was allocated exactly once.
    rows = await rows_of(committed_conn, car.iccid)
    assert await bill(settings) == 0
    assert await rows_of(committed_conn, car.iccid) == rows

    # The driver sees the same coverage on the API.
    mine = await http.get("/v1/driver/vehicles", headers=car.driver)
    assert mine.status_code == 200, mine.text
    [vehicle] = mine.json()["items"]
    assert vehicle["vehicle"]["vin"] == car.vin
    assert vehicle["coverage"][car.iccid]["blocked"] == coverage["blocked"]


async def test_a_cap_crossed_in_the_middle_of_an_item_splits_it_and_alerts_once(
    http: httpx.AsyncClient,
    settings: Settings,
    operator_key: str,
    committed_conn: psycopg.AsyncConnection,
) -> None:
    car = await Car(http, settings).open(operator_key, music_cap=25 * MB)
    await car.send(committed_conn, [car.report({"music.qq": 20 * MB})])
    await bill(settings)
    await car.send(committed_conn, [car.report({"music.qq": 10 * MB})])
    await bill(settings)

    cur = await committed_conn.execute(
        "SELECT seq, payer_kind, bytes FROM allocations WHERE iccid = %s ORDER BY seq, payer_kind",
        (car.iccid,),
    )
    assert await cur.fetchall() == [
        (1, "sponsor", 20 * MB), (2, "overage", 5 * MB), (2, "sponsor", 5 * MB),
    ]  # fmt: skip
    music = car.policies["music"]["policy_id"]
    caps = await http.get(
        f"/v1/sponsor/policies/{music}/caps",
        params={"period": datetime.now(ZoneInfo("Asia/Shanghai")).strftime("%Y-%m")},
        headers=car.music,
    )
    assert caps.status_code == 200, caps.text
    assert caps.json()["items"] == [
        {"iccid": car.iccid, "used_bytes": 25 * MB, "cap_bytes": 25 * MB}
    ]

    cur = await committed_conn.execute(
        "SELECT kind, percent FROM policy_alerts WHERE policy_id = %s ORDER BY percent", (music,)
    )
    assert await cur.fetchall() == [("cap", 80), ("cap", 100)]
    cur = await committed_conn.execute(
        "SELECT event_type, count(*) FROM webhook_messages WHERE tenant_id = %s GROUP BY 1",
        (car.music_id,),
    )
    assert await cur.fetchall() == [("policy.cap_threshold_reached", 2)]

    coverage = await car.coverage()
    assert coverage["apps"]["music.qq"] == {"payer": "blocked"}


@pytest.mark.usefixtures("chunking")
async def test_a_budget_spent_in_the_middle_of_a_batch_stops_paying_exactly_there(
    http: httpx.AsyncClient,
    settings: Settings,
    operator_key: str,
    committed_conn: psycopg.AsyncConnection,
) -> None:
    car = await Car(http, settings).open(operator_key, nav_budget=30 * MB, wallet_mb=5)
    await car.send(committed_conn, [car.report({"nav.amap": 20 * MB}) for _ in range(3)])
    await bill(settings)

    assert await car.paid(committed_conn) == {
        ("sponsor", car.map_vendor_id): 30 * MB,
        ("wallet", car.driver_id): 5 * MB,
        ("overage", car.driver_id): 25 * MB,
    }
    nav = car.policies["navigation"]["policy_id"]
    policy = await http.get(f"/v1/sponsor/policies/{nav}", headers=car.map_vendor)
    assert policy.json()["spend"]["used_bytes"] == 30 * MB
    assert policy.json()["spend"]["budget_left_bytes"] == 0
    cur = await committed_conn.execute(
        "SELECT percent FROM policy_alerts WHERE policy_id = %s AND kind = 'budget'"
        " ORDER BY percent",
        (nav,),
    )
    assert [r[0] for r in await cur.fetchall()] == [50, 80, 100]
    coverage = await car.coverage()
    assert coverage["apps"]["nav.amap"] == {"payer": "blocked"}
    assert coverage["apps"]["telematics"]["payer"] == "sponsor"


async def test_a_batch_that_fails_midway_leaves_nothing_and_the_next_run_allocates_once(
    http: httpx.AsyncClient,
    settings: Settings,
    operator_key: str,
    committed_conn: psycopg.AsyncConnection,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A batch's rows stream to the server while later chunks are still being computed: if the
    run dies after some chunks were sent, none of them may stay."""
    car = await Car(http, settings).open(operator_key, wallet_mb=100)
    apps = {"telematics": 10 * MB, "nav.amap": 20 * MB, "music.qq": 30 * MB,
            "wifi.hotspot": 50 * MB, "video.iqiyi": 80 * MB}  # fmt: skip
    await car.send(committed_conn, [car.report(apps)])
    monkeypatch.setattr(batches, "CHUNK_ITEMS", 1)
    real = batches.allocate
    chunks = 0

    def dies_at_the_fourth_chunk(*args: object, **kwargs: object) -> list[object]:
        nonlocal chunks
        chunks += 1
        if chunks == 4:
            raise RuntimeError("the run died here")
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(batches, "allocate", dies_at_the_fourth_chunk)
    with pytest.raises(RuntimeError, match="died here"):
        await bill(settings)
    assert chunks == 4
    assert await rows_of(committed_conn, car.iccid) == 0
    cur = await committed_conn.execute(
        "SELECT count(*) FROM allocation_daily WHERE iccid = %s", (car.iccid,)
    )
    assert await cur.fetchone() == (0,)
    assert await balance_of(http, car.driver) == 100 * MB

    monkeypatch.setattr(batches, "allocate", real)
    await bill(settings)
    assert await car.paid(committed_conn) == {
        ("sponsor", car.automaker_id): 10 * MB,
        ("sponsor", car.map_vendor_id): 20 * MB,
        ("sponsor", car.music_id): 30 * MB,
        ("wallet", car.driver_id): 100 * MB,
        ("overage", car.driver_id): 30 * MB,
    }
    assert await rows_of(committed_conn, car.iccid) == 6
    assert await balance_of(http, car.driver) == 0


async def test_a_restart_after_failed_batches_publishes_only_coverage_that_changed(
    http: httpx.AsyncClient,
    settings: Settings,
    operator_key: str,
    committed_conn: psycopg.AsyncConnection,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Five failed batches stop `flowbill bill`; the restart recomputes every SIM's coverage
    but publishes only the states that differ from what devices already hold."""
    car = await Car(http, settings).open(operator_key, wallet_mb=100)
    await bill(settings)
    before = await car.coverage()
    await car.send(committed_conn, [car.report({"wifi.hotspot": 10 * MB})])
    published: list[str] = []
    real_publish = worker.CoveragePublisher.publish

    async def counted(publisher: worker.CoveragePublisher, topic: str, payload: bytes) -> None:
        published.append(topic)
        await real_publish(publisher, topic, payload)

    monkeypatch.setattr(worker.CoveragePublisher, "publish", counted)
    real_allocate = batches.allocate

    def loses_a_race(*args: object, **kwargs: object) -> list[object]:
        raise psycopg.errors.SerializationFailure("lost a race")

    monkeypatch.setattr(batches, "allocate", loses_a_race)
    with pytest.raises(RuntimeError, match="five times"):
        await bill(settings)
    monkeypatch.setattr(batches, "allocate", real_allocate)
    await bill(settings)

    assert await car.paid(committed_conn) == {("wallet", car.driver_id): 10 * MB}
    # The wallet still holds data: nothing about this SIM changed, nothing was sent again.
    assert f"flowbill/v1/sims/{car.iccid}/coverage" not in published
    assert await car.coverage() == before


async def test_a_policy_changed_mid_month_applies_from_its_moment_and_never_rewrites(
    http: httpx.AsyncClient,
    settings: Settings,
    operator_key: str,
    committed_conn: psycopg.AsyncConnection,
) -> None:
    car = await Car(http, settings).open(operator_key)
    await car.send(committed_conn, [car.report({"music.qq": 10 * MB})])
    await bill(settings)
    music = car.policies["music"]
    change_at = datetime.now(UTC) + timedelta(seconds=1)
    changed = await http.post(
        f"/v1/sponsor/policies/{music['policy_id']}/terms",
        json={"scope": music["terms"]["scope"], "categories": ["music"], "cap_bytes": 15 * MB,
              "unit_price": "0.08", "effective_from": change_at.isoformat()},
        headers=car.music,
    )  # fmt: skip
    assert changed.status_code == 200, changed.text
    assert [t["unit_price"] for t in changed.json()["history"]] == ["0.050000", "0.080000"]
    await asyncio.sleep(max((change_at - datetime.now(UTC)).total_seconds(), 0) + 0.1)
    after = change_at + timedelta(milliseconds=500)
    await car.send(committed_conn, [car.report({"music.qq": 10 * MB}, start=after)])
    await bill(settings)

    cur = await committed_conn.execute(
        "SELECT seq, payer_kind, bytes, terms_from FROM allocations WHERE iccid = %s"
        " ORDER BY seq, payer_kind",
        (car.iccid,),
    )
    rows = await cur.fetchall()
    first_terms = datetime.fromisoformat(music["terms"]["effective_from"])
    assert rows == [
        (1, "sponsor", 10 * MB, first_terms),
        # The new cap (15 MB) counts what the policy already paid this month (10 MB).
        (2, "overage", 5 * MB, None),
        (2, "sponsor", 5 * MB, rows[2][3]),
    ]
    assert rows[2][3] >= change_at - timedelta(seconds=1)

    past = await http.post(
        f"/v1/sponsor/policies/{music['policy_id']}/terms",
        json={"scope": music["terms"]["scope"], "categories": ["music"], "unit_price": "0.01",
              "effective_from": "2026-01-01T00:00:00Z"},
        headers=car.music,
    )  # fmt: skip
    assert_problem(past, 422, "effective-in-the-past")


async def test_late_items_stay_in_their_month_inside_the_closing_window_and_adjust_after(
    http: httpx.AsyncClient,
    settings: Settings,
    operator_key: str,
    committed_conn: psycopg.AsyncConnection,
) -> None:
    zone = ZoneInfo("Asia/Shanghai")
    today = datetime.now(zone)
    this_month = today.date().replace(day=1)
    last_month = (this_month - timedelta(days=1)).replace(day=1)
    used = datetime(last_month.year, last_month.month, 15, 12, tzinfo=zone).astimezone(UTC)
    days_since = (today.date() - this_month).days

    inside = await Car(http, settings).open(operator_key)
    await inside.send(committed_conn, [inside.report({"telematics": MB}, start=used)])
    await bill(settings, billing_closing_days=days_since + 2)
    outside = await Car(http, settings).open(operator_key)
    await outside.send(committed_conn, [outside.report({"telematics": MB}, start=used)])
    await bill(settings, billing_closing_days=max(days_since - 1, 0))

    for car, period, adjustment in (
        (inside, last_month, False), (outside, this_month, True),
    ):  # fmt: skip
        cur = await committed_conn.execute(
            "SELECT period, adjustment, payer_kind FROM allocations WHERE iccid = %s",
            (car.iccid,),
        )
        # The policies were made after that day: the user's, booked by the closing window.
        assert await cur.fetchall() == [(period, adjustment, "overage")]


async def test_a_dry_wallet_blocks_the_app_and_a_refill_unblocks_it(
    http: httpx.AsyncClient,
    settings: Settings,
    operator_key: str,
    committed_conn: psycopg.AsyncConnection,
) -> None:
    car = await Car(http, settings).open(operator_key, wallet_mb=10)
    await bill(settings)
    assert (await car.coverage())["apps"]["wifi.hotspot"] == {"payer": "wallet"}

    await car.send(committed_conn, [car.report({"wifi.hotspot": 30 * MB})])
    await bill(settings)
    assert await car.paid(committed_conn) == {
        ("wallet", car.driver_id): 10 * MB, ("overage", car.driver_id): 20 * MB,
    }  # fmt: skip
    coverage = await car.coverage()
    assert coverage["apps"]["wifi.hotspot"] == {"payer": "blocked"}
    assert coverage["wallet_has_data"] is False

    shop = await Shop(http, settings).open(mb=100)
    campaign = await shop.campaign(bytes_per_action=50 * MB, budget_bytes=50 * MB)
    await shop.event(campaign, car.driver_id)
    assert await balance_of(http, car.driver) == 50 * MB
    await bill(settings)
    coverage = await car.coverage()
    assert coverage["apps"]["wifi.hotspot"] == {"payer": "wallet"}
    assert "wifi.hotspot" not in coverage["blocked"]


async def test_sponsors_never_see_each_others_policies_vehicles_or_sims(
    http: httpx.AsyncClient, settings: Settings, operator_key: str
) -> None:
    a = await Car(http, settings).open(operator_key)
    b = await Car(http, settings).open(operator_key)
    policy = a.policies["telematics"]["policy_id"]
    assert_problem(
        await http.get(f"/v1/sponsor/policies/{policy}", headers=b.automaker), 404,
        "policy-not-found",
    )  # fmt: skip
    assert_problem(
        await http.post(f"/v1/sponsor/policies/{policy}/pause", headers=b.automaker), 404,
        "policy-not-found",
    )  # fmt: skip
    assert_problem(
        await http.get(f"/v1/sponsor/vehicles/{a.vin}", headers=b.automaker), 404,
        "vehicle-not-found",
    )  # fmt: skip
    assert_problem(
        await http.get(f"/v1/sponsor/sims/{a.iccid}/coverage", headers=b.automaker), 404,
        "not-found",
    )  # fmt: skip
    listed = await http.get("/v1/sponsor/sims", headers=b.automaker)
    assert [s["iccid"] for s in listed.json()["items"]] == [b.iccid]
    mine = await http.get("/v1/sponsor/policies", headers=b.map_vendor)
    assert {p["name"] for p in mine.json()["items"]} == {"navigation"}
    # B's map vendor may not name A's vehicles: A never allowed it.
    stolen = await http.post(
        "/v1/sponsor/policies",
        json={"name": "x", "scope": {"kind": "automaker", "automaker_id": a.automaker_id},
              "categories": ["navigation"], "unit_price": "0.01"},
        headers={**b.map_vendor, "Idempotency-Key": "steal-1"},
    )  # fmt: skip
    assert_problem(stolen, 403, "scope-not-allowed")
    # Nor fit A's SIM to its own vehicle: it is not B's.
    taken = await http.put(
        f"/v1/sponsor/vehicles/{b.vin}",
        json={"model": "X", "iccids": [a.iccid]},
        headers=b.automaker,
    )
    assert_problem(taken, 422, "sim-not-owned")
    as_driver = await http.get("/v1/sponsor/policies", headers=a.driver)
    assert_problem(as_driver, 403, "role-not-allowed")


async def test_bad_policy_requests_get_clear_problems_and_change_nothing(
    http: httpx.AsyncClient, settings: Settings, operator_key: str
) -> None:
    car = await Car(http, settings).open(operator_key)
    scope = {"kind": "automaker", "automaker_id": car.automaker_id}
    good = {"name": "ota", "scope": scope, "categories": ["ota"], "unit_price": "0.01"}
    headers = {**car.automaker, "Idempotency-Key": "ota-1"}
    bad_iccid = car.iccid[:-1] + str((int(car.iccid[-1]) + 1) % 10)
    cases = [
        ({**good, "apps": ["no.such.app"]}, 422, "unknown-apps"),
        ({**good, "budget_bytes": MB, "budget_minor": 100}, 422, "invalid-input"),
        ({**good, "unit_price": "-1"}, 422, "invalid-input"),
        ({**good, "unit_price": "0.1234567"}, 422, "invalid-input"),
        ({**good, "categories": ["teleportation"]}, 422, "invalid-input"),
        ({**good, "categories": []}, 422, "invalid-input"),
        ({**good, "scope": {**scope, "kind": "model"}}, 422, "invalid-input"),
        ({**good, "scope": {"kind": "sims", "automaker_id": car.automaker_id,
                            "iccids": [bad_iccid]}}, 422, "invalid-iccid"),
        ({**good, "scope": {"kind": "sims", "automaker_id": car.automaker_id,
                            "iccids": [new_iccid()]}}, 422, "sims-outside-scope"),
        ({**good, "cap_bytes": 0}, 422, "invalid-input"),
        ({**good, "priority": -1}, 422, "invalid-input"),
        ({**good, "valid_from": "2026-01-02T00:00:00Z", "valid_until": "2026-01-01T00:00:00Z"},
         422, "invalid-input"),
        ({**good, "surprise": 1}, 422, "invalid-input"),
    ]  # fmt: skip
    for body, status, problem in cases:
        assert_problem(
            await http.post("/v1/sponsor/policies", json=body, headers=headers), status, problem
        )
    assert_problem(
        await http.post("/v1/sponsor/policies", json=good, headers=car.automaker), 422,
        "invalid-input",
    )  # fmt: skip
    first = await http.post("/v1/sponsor/policies", json=good, headers=headers)
    assert first.status_code == 201, first.text
    again = await http.post("/v1/sponsor/policies", json=good, headers=headers)
    assert again.status_code == 200
    assert again.json()["policy_id"] == first.json()["policy_id"]
    other = await http.post(
        "/v1/sponsor/policies", json={**good, "unit_price": "0.02"}, headers=headers
    )
    assert_problem(other, 409, "idempotency-key-reused")

    for vin, body, status, problem in [
        ("SHORT", {"model": "X"}, 422, "invalid-input"),
        ("IOQ45678901234567", {"model": "X"}, 422, "invalid-input"),
        (car.vin, {"model": "X", "iccids": [bad_iccid]}, 422, "invalid-iccid"),
        (car.vin, {"model": "X", "driver_id": car.automaker_id}, 422, "invalid-driver"),
        (car.vin, {"model": ""}, 422, "invalid-input"),
    ]:
        answer = await http.put(f"/v1/sponsor/vehicles/{vin}", json=body, headers=car.automaker)
        assert_problem(answer, status, problem)
    assert (await http.get(f"/v1/sponsor/vehicles/{car.vin}", headers=car.automaker)).json()[
        "iccids"
    ] == [car.iccid]
    for period in ("2026-13", "26-01", "2026-1", "x"):
        answer = await http.get(
            f"/v1/sponsor/policies/{first.json()['policy_id']}/caps",
            params={"period": period}, headers=car.automaker,
        )  # fmt: skip
        assert_problem(answer, 422, "invalid-period")
    assert_problem(
        await http.put(
            "/v1/operator/catalogue/apps/bad app", json={"category": "music"},
            headers=bearer(operator_key),
        ),
        422, "invalid-input",
    )  # fmt: skip


async def test_flowbill_bill_once_from_the_command_line(
    http: httpx.AsyncClient,
    settings: Settings,
    operator_key: str,
    committed_conn: psycopg.AsyncConnection,
    ingest_workers: list[IngestProcess],
) -> None:
    car = await Car(http, settings).open(operator_key)
    await car.send(committed_conn, [car.report({"telematics": 3 * MB, "music.qq": 2 * GB})])
    env = {
        **os.environ,
        "FLOWBILL_DATABASE_URL": settings.database_dsn,
        **settings.broker_environment(),
        "FLOWBILL_ENVIRONMENT": "test",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cli", "bill", "--once", env=env, cwd=REPO,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode == 0, err.decode()[-2000:]
    assert "items allocated:" in out.decode()
    assert await car.paid(committed_conn) == {
        ("sponsor", car.automaker_id): 3 * MB,
        ("sponsor", car.music_id): GB,
        ("overage", car.driver_id): GB,
    }


async def test_a_new_policy_may_start_back_in_the_open_month_but_not_before(
    http: httpx.AsyncClient,
    settings: Settings,
    operator_key: str,
    committed_conn: psycopg.AsyncConnection,
) -> None:
    car = await Car(http, settings).open(operator_key)
    earlier = datetime.now(UTC) - timedelta(minutes=30)
    scope = {"kind": "automaker", "automaker_id": car.automaker_id}
    video = await car.policy(
        "video", car.automaker, categories=["video"], unit_price="0.01", scope=scope,
        valid_from=earlier.isoformat(),
    )  # fmt: skip
    await car.send(committed_conn, [car.report({"video.iqiyi": 4 * MB}, start=earlier)])
    await bill(settings)
    cur = await committed_conn.execute(
        "SELECT payer_kind, policy_id FROM allocations WHERE iccid = %s", (car.iccid,)
    )
    assert await cur.fetchall() == [("sponsor", video["policy_id"])]

    too_early = await http.post(
        "/v1/sponsor/policies",
        json={"name": "old", "scope": scope, "categories": ["fm"], "unit_price": "0.01",
              "valid_from": (datetime.now(UTC) - timedelta(days=70)).isoformat()},
        headers={**car.automaker, "Idempotency-Key": "old-1"},
    )  # fmt: skip
    assert_problem(too_early, 422, "effective-in-the-past")


async def test_pausing_a_policy_republishes_coverage_and_resuming_restores_it(
    http: httpx.AsyncClient, settings: Settings, operator_key: str
) -> None:
    car = await Car(http, settings).open(operator_key)
    await bill(settings)
    music = car.policies["music"]["policy_id"]
    assert (await car.coverage())["apps"]["music.qq"]["payer"] == "sponsor"

    paused = await http.post(f"/v1/sponsor/policies/{music}/pause", headers=car.music)
    assert paused.status_code == 200, paused.text
    assert paused.json()["terms"]["paused"] is True
    await bill(settings)
    assert (await car.coverage())["apps"]["music.qq"] == {"payer": "blocked"}

    again = await http.post(f"/v1/sponsor/policies/{music}/pause", headers=car.music)
    assert len(again.json()["history"]) == len(paused.json()["history"])
    resumed = await http.post(f"/v1/sponsor/policies/{music}/resume", headers=car.music)
    assert resumed.json()["terms"]["paused"] is False
    await bill(settings)
    assert (await car.coverage())["apps"]["music.qq"]["sponsor_id"] == car.music_id


async def test_statements_of_a_real_run_add_up_and_drill_down_to_the_device_reports(
    http: httpx.AsyncClient,
    settings: Settings,
    operator_key: str,
    committed_conn: psycopg.AsyncConnection,
) -> None:
    car = await Car(http, settings).open(operator_key, music_cap=5 * MB)
    await car.send(
        committed_conn,
        [
            car.report({"nav.amap": 3 * MB, "music.qq": 4 * MB}),
            car.report({"nav.amap": MB, "music.qq": 4 * MB, "wifi.hotspot": 2 * MB}),
        ],
    )
    await bill(settings)
    period = datetime.now(ZoneInfo("Asia/Shanghai")).strftime("%Y-%m")

    statement = await http.get(f"/v1/sponsor/statements/{period}", headers=car.map_vendor)
    assert statement.status_code == 200, statement.text
    [line] = statement.json()["lines"]
    assert (line["category"], line["bytes"], line["unit_price"]) == (
        "navigation", 4 * MB, "0.030000",
    )  # fmt: skip
    # 4 MB x 0.03 CNY = 0.12 CNY, rounded once for the line.
    assert (line["amount_minor"], line["amount"]) == (12, "0.12")
    items = await http.get(
        f"/v1/sponsor/statements/{period}/lines/{line['line_id']}/items", headers=car.map_vendor
    )
    assert items.status_code == 200, items.text
    assert [(i["iccid"], i["boot"], i["seq"], i["bytes"]) for i in items.json()["items"]] == [
        (car.iccid, 1, 1, 3 * MB), (car.iccid, 1, 2, MB),
    ]  # fmt: skip

    music = await http.get(f"/v1/sponsor/statements/{period}", headers=car.music)
    assert [ln["bytes"] for ln in music.json()["lines"]] == [5 * MB]
    mine = await http.get(f"/v1/driver/statements/{period}", headers=car.driver)
    assert mine.status_code == 200, mine.text
    assert (mine.json()["wallet_bytes"], mine.json()["overage_bytes"]) == (0, 5 * MB)
    # Another sponsor's line is not the automaker's to read.
    other = await http.get(
        f"/v1/sponsor/statements/{period}/lines/{line['line_id']}/items", headers=car.automaker
    )
    assert other.status_code == 404
