"""The card lifecycle as commands: allowed and refused changes (409 with the allowed ones),
idempotency, effective times, suspension by merchant or holder, and the system's blocks
(IMEI mismatch, quota used up) that clear by themselves."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from uuid import UUID

import httpx

from flowbill import db
from flowbill.settings import Settings
from iot_cards.service import cards, usage
from tests.conftest import assert_problem
from tests.iot_cards.factories import (
    MB,
    Store,
    active_card,
    buyer,
    idem,
    new_imei,
    poll,
    sweep,
    use_data,
    wholesale_plan,
)


async def send(
    http: httpx.AsyncClient, headers: dict[str, str], path: str, **body: object
) -> httpx.Response:
    return await http.post(path, json=body, headers=idem(headers))


async def test_suspend_and_resume_by_merchant_and_holder(
    http: httpx.AsyncClient, settings: Settings, operator_key: str
) -> None:
    store = await Store(http, settings, operator_key).open(cards=1)
    _, holder = await buyer(settings)
    iccid, _ = await active_card(http, store, holder)
    mine, theirs = f"/v1/iot/cards/{iccid}/commands", f"/v1/merchant/iot/cards/{iccid}/commands"

    suspended = await send(http, holder, mine, command="suspend", reason="on holiday")
    assert suspended.status_code == 200, suspended.text
    assert (suspended.json()["state"], suspended.json()["suspended_by"]) == ("suspended", "holder")
    assert suspended.json()["allowed_commands"] == ["resume"]
    resumed = await send(http, holder, mine, command="resume")
    assert resumed.json()["state"] == "active"

    # The merchant's suspension is the merchant's to lift.
    await send(http, store.merchant, theirs, command="suspend")
    refused = await send(http, holder, mine, command="resume")
    body = assert_problem(refused, 409, "transition-not-allowed")
    assert body["allowed"] == []
    assert body["state"] == "suspended"
    assert (await send(http, store.merchant, theirs, command="resume")).json()["state"] == "active"

    # A refused change names what is allowed.
    again = await send(http, holder, mine, command="resume")
    body = assert_problem(again, 409, "transition-not-allowed")
    assert body["allowed"] == ["suspend"]
    # Holders cannot terminate; merchants can, and then nothing more is allowed.
    assert_problem(
        await send(http, holder, mine, command="terminate"), 409, "transition-not-allowed"
    )
    ended = await send(http, store.merchant, theirs, command="terminate", reason="contract over")
    assert ended.json()["state"] == "terminated"
    assert ended.json()["allowed_commands"] == []
    final = await send(http, store.merchant, theirs, command="resume")
    assert assert_problem(final, 409, "transition-not-allowed")["allowed"] == []
    history = ended.json()["history"]
    assert [(h["command"], h["actor"]) for h in history[-3:]] == [
        ("suspend", "merchant"),
        ("resume", "merchant"),
        ("terminate", "merchant"),
    ]
    bad = await send(http, store.merchant, theirs, command="explode")
    assert_problem(bad, 422, "invalid-input")


async def test_a_command_repeated_with_its_key_acts_once(
    http: httpx.AsyncClient, settings: Settings, operator_key: str
) -> None:
    store = await Store(http, settings, operator_key).open(cards=1)
    _, holder = await buyer(settings)
    iccid, _ = await active_card(http, store, holder)
    headers = idem(store.merchant)
    path = f"/v1/merchant/iot/cards/{iccid}/commands"
    first = await http.post(path, json={"command": "suspend"}, headers=headers)
    second = await http.post(path, json={"command": "suspend"}, headers=headers)
    assert first.status_code == second.status_code == 200
    assert [h["command"] for h in second.json()["history"]].count("suspend") == 1
    other = await http.post(path, json={"command": "resume"}, headers=headers)
    assert_problem(other, 409, "idempotency-key-reused")


async def test_effective_times_record_the_past_and_schedule_the_future(
    http: httpx.AsyncClient, settings: Settings, operator_key: str
) -> None:
    store = await Store(http, settings, operator_key).open(cards=1)
    _, holder = await buyer(settings)
    iccid, _ = await active_card(http, store, holder)
    path = f"/v1/merchant/iot/cards/{iccid}/commands"
    long_ago = (datetime.now(UTC) - timedelta(days=400)).isoformat()
    too_early = await send(http, store.merchant, path, command="suspend", effective_at=long_ago)
    assert_problem(too_early, 422, "invalid-effective-time")
    naive = await send(
        http, store.merchant, path, command="suspend", effective_at="2026-01-01T00:00:00"
    )
    assert_problem(naive, 422, "invalid-effective-time")
    soon = datetime.now(UTC) + timedelta(seconds=1)
    scheduled = await send(
        http, store.merchant, path, command="suspend", effective_at=soon.isoformat()
    )
    assert scheduled.status_code == 200
    assert scheduled.json()["state"] == "active"
    assert scheduled.json()["history"][-1]["status"] == "scheduled"
    await asyncio.sleep(1.2)
    report = await sweep(http, operator_key)
    assert int(str(report["scheduled_applied"])) >= 1
    card = (await http.get(f"/v1/merchant/iot/cards/{iccid}", headers=store.merchant)).json()
    assert card["state"] == "suspended"
    entry = card["history"][-1]
    assert (entry["status"], entry["from_state"], entry["to_state"]) == (
        "applied",
        "active",
        "suspended",
    )
    # A scheduled change that is no longer allowed when due is kept, as skipped.
    await send(
        http,
        store.merchant,
        path,
        command="suspend",
        effective_at=(datetime.now(UTC) + timedelta(seconds=0.5)).isoformat(),
    )
    await asyncio.sleep(0.7)
    await sweep(http, operator_key)
    card = (await http.get(f"/v1/merchant/iot/cards/{iccid}", headers=store.merchant)).json()
    assert card["history"][-1]["status"] == "skipped"


async def test_another_device_blocks_the_card_until_it_is_back(
    http: httpx.AsyncClient, settings: Settings, operator_key: str
) -> None:
    store = await Store(http, settings, operator_key).open(cards=1)
    _, holder = await buyer(settings)
    iccid, imei = await active_card(http, store, holder)
    reports = f"/v1/iot/cards/{iccid}/device-reports"
    moved = await http.post(reports, json={"imei": new_imei()}, headers=holder)
    assert moved.status_code == 200, moved.text
    assert (moved.json()["state"], moved.json()["block_reasons"]) == ("blocked", ["imei_mismatch"])
    conn = await db.connect(settings, application_name="flowbill-test")
    try:
        assert await cards.blocked_cards(conn, [iccid, "89860000000000000000"]) == {
            iccid: "imei_mismatch"
        }
        changed = await cards.cards_changed_since(conn, since=datetime.now(UTC) - timedelta(1))
        assert iccid in changed
    finally:
        await conn.close()
    # The holder can still suspend a blocked card; the block outlives the suspension.
    back = await http.post(
        f"/v1/merchant/iot/cards/{iccid}/device-reports",
        json={"imei": imei},
        headers=store.merchant,
    )
    assert (back.json()["state"], back.json()["block_reasons"]) == ("active", [])
    assert [h["command"] for h in back.json()["history"][-2:]] == ["block", "unblock"]
    assert all(h["actor"] == "system" for h in back.json()["history"][-2:])
    bad = await http.post(reports, json={"imei": "35123"}, headers=holder)
    assert_problem(bad, 422, "invalid-imei")


async def test_a_used_up_quota_blocks_and_a_recharge_unblocks(
    http: httpx.AsyncClient, settings: Settings, operator_key: str
) -> None:
    store = await Store(http, settings, operator_key).open(cards=1, data_mb=10)
    _, holder = await buyer(settings)
    iccid, _ = await active_card(http, store, holder)
    threshold = await http.post(
        "/v1/merchant/iot/thresholds", json={"percent": 80}, headers=store.merchant
    )
    assert threshold.status_code == 201, threshold.text
    await http.post("/v1/merchant/iot/thresholds", json={"mb": 5}, headers=store.merchant)
    await use_data(settings, iccid, mb=6)
    await sweep(http, operator_key)
    alerts = (await http.get("/v1/merchant/iot/usage-alerts", headers=store.merchant)).json()[
        "items"
    ]
    assert [(a["bytes"], a["percent"]) for a in alerts] == [(5 * MB, None)]
    await use_data(settings, iccid, mb=4)
    await sweep(http, operator_key)
    await sweep(http, operator_key)
    alerts = (await http.get("/v1/merchant/iot/usage-alerts", headers=store.merchant)).json()[
        "items"
    ]
    # Each threshold once per month, however often the sweep runs.
    assert sorted((a["percent"] or 0) for a in alerts) == [0, 80]
    assert alerts[0]["iccids"] == [iccid]
    assert alerts[0]["used_bytes"] == 10 * MB
    card = (await http.get(f"/v1/iot/cards/{iccid}", headers=holder)).json()
    assert (card["state"], card["block_reasons"]) == ("blocked", ["quota_exhausted"])

    conn = await db.connect(settings, application_name="flowbill-test")
    try:
        async with conn.transaction():
            pending = await usage.pending_usage_alerts(conn, merchant_id=store_id(store))
            assert len(pending) == 2
            assert pending[0].event_type == "card.usage_threshold_reached"
            marked = await usage.mark_usage_alerts_delivered(
                conn, [a.alert_id for a in pending], now=datetime.now(UTC)
            )
            assert marked == 2
        assert await usage.pending_usage_alerts(conn, merchant_id=store_id(store)) == []
        assert await cards.blocked_cards(conn, [iccid]) == {iccid: "quota_exhausted"}
    finally:
        await conn.close()

    top_up = await wholesale_plan(
        http, operator_key, kind="top_up", data_mb=100, wholesale_minor=200
    )
    await store.price(top_up, retail_minor=300)
    recharged = await http.post(
        f"/v1/iot/cards/{iccid}/recharges",
        json={"plan_id": top_up["plan_id"]},
        headers=idem(holder),
    )
    await poll(
        http,
        holder,
        f"/v1/iot/orders/{recharged.json()['order_id']}",
        field="state",
        until={"paid"},
    )
    card = (await http.get(f"/v1/iot/cards/{iccid}", headers=holder)).json()
    assert (card["state"], card["block_reasons"]) == ("active", [])


def store_id(store: Store) -> UUID:
    return UUID(store.merchant_id)


async def test_a_pooled_plan_shares_its_data_across_the_merchants_cards(
    http: httpx.AsyncClient, settings: Settings, operator_key: str
) -> None:
    store = await Store(http, settings, operator_key).open(cards=2, data_mb=10, pooled=True)
    _, holder = await buyer(settings)
    first, _ = await active_card(http, store, holder)
    second, _ = await active_card(http, store, holder)
    await use_data(settings, first, mb=15)
    await sweep(http, operator_key)
    # 15 MB of a 20 MB pool: neither card is blocked, though one used more than its share.
    usage = (await http.get(f"/v1/iot/cards/{second}/usage", headers=holder)).json()
    assert (usage["pooled"], usage["pool_cards"]) == (True, 2)
    assert (usage["pool_used_bytes"], usage["pool_quota_bytes"]) == (15 * MB, 20 * MB)
    assert (await http.get(f"/v1/iot/cards/{first}", headers=holder)).json()["state"] == "active"
    await use_data(settings, second, mb=5)
    await sweep(http, operator_key)
    for iccid in (first, second):
        card = (await http.get(f"/v1/iot/cards/{iccid}", headers=holder)).json()
        assert card["block_reasons"] == ["quota_exhausted"]
