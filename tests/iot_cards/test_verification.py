"""Real-name verification over HTTP: every bad ID number class refused with its own problem,
the eleventh card on one ID refused (also under concurrency), rejection by the provider,
activation refused before verification, and no personal data in responses or logs."""

from __future__ import annotations

import asyncio
import logging
from datetime import date

import httpx
import pytest

from flowbill.settings import Settings
from iot_cards.idcheck import check_digit
from tests.conftest import assert_problem
from tests.iot_cards.factories import (
    Store,
    behave_iot,
    buyer,
    idem,
    new_imei,
    paid_card,
    person,
    poll,
    resident_id,
    verified_card,
    verify,
)


def with_check(first17: str) -> str:
    return first17 + check_digit(first17)


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        ("id_number", "11010519491231002", "id-number-format"),
        ("id_number", with_check("99010519491231002"), "id-number-region"),
        ("id_number", with_check("11010519490231002"), "id-number-birth-date"),
        ("id_number", with_check("11010529990101002"), "id-number-future-birth"),
        ("id_number", "110105194912310021", "id-number-check-digit"),
        ("id_number", with_check(f"110105{date.today().year - 10}0101002"), "id-number-underage"),
        ("name", "X", "invalid-name"),
        ("phone", "12345", "invalid-phone"),
    ],
)
async def test_each_bad_input_has_a_precise_problem(
    http: httpx.AsyncClient,
    settings: Settings,
    operator_key: str,
    field: str,
    value: str,
    problem: str,
) -> None:
    store = await Store(http, settings, operator_key).open(cards=1)
    _, holder = await buyer(settings)
    iccid, _ = await paid_card(http, store, holder)
    answer = await http.post(
        f"/v1/iot/cards/{iccid}/verification", json=person(**{field: value}), headers=idem(holder)
    )
    body = assert_problem(answer, 422, problem)
    # The problem never echoes what was sent.
    assert value not in answer.text or len(value) < 3
    assert "detail" in body
    card = (await http.get(f"/v1/iot/cards/{iccid}", headers=holder)).json()
    assert card["state"] == "sold"


async def test_a_request_that_is_not_a_verification_is_refused(
    http: httpx.AsyncClient, settings: Settings
) -> None:
    _, holder = await buyer(settings)
    iccid = "89860000000000000000"
    missing = await http.post(
        f"/v1/iot/cards/{iccid}/verification", json={"name": "张三"}, headers=idem(holder)
    )
    assert_problem(missing, 422, "invalid-input")
    no_key = await http.post(f"/v1/iot/cards/{iccid}/verification", json=person(), headers=holder)
    assert_problem(no_key, 422, "invalid-input")
    not_mine = await http.post(
        f"/v1/iot/cards/{iccid}/verification", json=person(), headers=idem(holder)
    )
    assert_problem(not_mine, 404, "card-not-found")


async def test_the_eleventh_card_on_one_id_is_refused(
    http: httpx.AsyncClient, settings: Settings, operator_key: str
) -> None:
    number = resident_id()
    stores = [await Store(http, settings, operator_key).open(cards=6) for _ in range(2)]
    _, holder = await buyer(settings)
    iccids = []
    for n in range(11):
        iccids.append((await paid_card(http, stores[n % 2], holder))[0])
    # Ten across both merchants, submitted at once: all ten fit.
    answers = await asyncio.gather(
        *(verify(http, holder, iccid, id_number=number) for iccid in iccids[:10])
    )
    assert [a.status_code for a in answers] == [202] * 10
    eleventh = await verify(http, holder, iccids[10], id_number=number)
    body = assert_problem(eleventh, 409, "id-card-limit-reached")
    assert number not in str(body)
    # Another ID number is not affected.
    assert (await verify(http, holder, iccids[10])).status_code == 202


async def test_concurrent_verifications_never_pass_ten(
    http: httpx.AsyncClient, settings: Settings, operator_key: str
) -> None:
    number = resident_id()
    store = await Store(http, settings, operator_key).open(cards=12)
    _, holder = await buyer(settings)
    iccids = [(await paid_card(http, store, holder))[0] for _ in range(12)]
    answers = await asyncio.gather(*(verify(http, holder, i, id_number=number) for i in iccids))
    codes = sorted(a.status_code for a in answers)
    assert codes == [202] * 10 + [409] * 2


async def test_a_rejected_identity_frees_its_place_and_the_card_can_try_again(
    http: httpx.AsyncClient, settings: Settings, operator_key: str, iot_gateway_url: str
) -> None:
    store = await Store(http, settings, operator_key).open(cards=1)
    _, holder = await buyer(settings)
    iccid, _ = await paid_card(http, store, holder)
    await behave_iot(iot_gateway_url, reject_rate=1.0)
    assert (await verify(http, holder, iccid)).status_code == 202
    done = await poll(
        http,
        holder,
        f"/v1/iot/cards/{iccid}/verification",
        field="state",
        until={"verified", "rejected"},
    )
    assert (done["state"], done["reason"]) == ("rejected", "identity_mismatch")
    card = (await http.get(f"/v1/iot/cards/{iccid}", headers=holder)).json()
    assert card["state"] == "sold"
    activation = await http.post(
        f"/v1/iot/cards/{iccid}/activation", json={"imei": new_imei()}, headers=idem(holder)
    )
    assert assert_problem(activation, 409, "transition-not-allowed")["allowed"] == [
        "submit_verification"
    ]
    await behave_iot(iot_gateway_url)
    assert (await verify(http, holder, iccid)).status_code == 202
    done = await poll(
        http,
        holder,
        f"/v1/iot/cards/{iccid}/verification",
        field="state",
        until={"verified", "rejected"},
    )
    assert done["state"] == "verified"


async def test_activation_waits_for_the_provider(
    http: httpx.AsyncClient, settings: Settings, operator_key: str, iot_gateway_url: str
) -> None:
    store = await Store(http, settings, operator_key).open(cards=1)
    _, holder = await buyer(settings)
    iccid, _ = await paid_card(http, store, holder)
    await behave_iot(iot_gateway_url, settle_delay_seconds=1.0)
    assert (await verify(http, holder, iccid)).status_code == 202
    early = await http.post(
        f"/v1/iot/cards/{iccid}/activation", json={"imei": new_imei()}, headers=idem(holder)
    )
    body = assert_problem(early, 409, "not-verified")
    assert body["verification_state"] == "pending"
    await poll(
        http, holder, f"/v1/iot/cards/{iccid}/verification", field="state", until={"verified"}
    )
    bad_imei = await http.post(
        f"/v1/iot/cards/{iccid}/activation", json={"imei": "123"}, headers=idem(holder)
    )
    assert_problem(bad_imei, 422, "invalid-imei")
    key = idem(holder)
    imei = new_imei()
    first = await http.post(f"/v1/iot/cards/{iccid}/activation", json={"imei": imei}, headers=key)
    again = await http.post(f"/v1/iot/cards/{iccid}/activation", json={"imei": imei}, headers=key)
    assert first.status_code == again.status_code == 200
    assert [h["command"] for h in again.json()["history"]].count("activate") == 1


async def test_a_verification_before_payment_is_refused(
    http: httpx.AsyncClient, settings: Settings, operator_key: str, gateway_url: str
) -> None:
    from tests.wallet.factories import behave

    store = await Store(http, settings, operator_key).open(cards=1)
    _, holder = await buyer(settings)
    await behave(gateway_url, pending_rate=1.0, settle_delay_seconds=5.0)
    placed = await http.post(
        "/v1/iot/orders",
        json={"merchant_id": store.merchant_id, "plan_id": store.plan["plan_id"]},
        headers=idem(holder),
    )
    iccid = placed.json()["iccid"]
    assert_problem(await verify(http, holder, iccid), 409, "order-not-paid")


async def test_personal_data_never_reaches_the_logs_or_the_store(
    http: httpx.AsyncClient,
    settings: Settings,
    operator_key: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    import psycopg

    store = await Store(http, settings, operator_key).open(cards=1)
    _, holder = await buyer(settings)
    number = resident_id()
    with caplog.at_level(logging.DEBUG):
        iccid = await verified_card(
            http, store, holder, id_number=number, name="欧阳小明", phone="13912345678"
        )
    logged = "\n".join(str(r.__dict__) for r in caplog.records)
    for secret in (number, "欧阳小明", "13912345678"):
        assert secret not in logged
    async with await psycopg.AsyncConnection.connect(settings.database_dsn) as conn:
        cur = await conn.execute(
            "SELECT row_to_json(v)::text FROM iot_verifications v WHERE iccid = %s", (iccid,)
        )
        rows = " ".join(r[0] for r in await cur.fetchall())
    for secret in (number, "欧阳小明", "13912345678"):
        assert secret not in rows
    assert "欧**明" in rows


async def test_a_check_the_provider_never_answered_is_settled_by_reconciliation(
    http: httpx.AsyncClient, settings: Settings, operator_key: str, iot_gateway_url: str
) -> None:
    from tests.conftest import bearer

    store = await Store(http, settings, operator_key).open(cards=2)
    _, holder = await buyer(settings)
    number = resident_id()
    lost, _ = await paid_card(http, store, holder)
    quiet, _ = await paid_card(http, store, holder)
    # The provider is down for the first check, and the second's callback never comes.
    await behave_iot(iot_gateway_url, fail_rate=1.0)
    assert (await verify(http, holder, lost, id_number=number)).status_code == 202
    await behave_iot(iot_gateway_url, drop_callbacks=True)
    assert (await verify(http, holder, quiet, id_number=number)).status_code == 202
    await asyncio.sleep(1.2)
    report = await http.post("/v1/operator/iot/reconciliations", headers=bearer(operator_key))
    assert report.status_code == 200, report.text
    assert report.json()["verifications"] >= 2
    first = (await http.get(f"/v1/iot/cards/{lost}/verification", headers=holder)).json()
    assert (first["state"], first["reason"]) == ("rejected", "not_received_by_provider")
    second = (await http.get(f"/v1/iot/cards/{quiet}/verification", headers=holder)).json()
    assert second["state"] == "verified"
    # The rejected check gave its slot back: only one card counts for this ID.
    import psycopg

    from iot_cards.idcheck import id_hash

    async with await psycopg.AsyncConnection.connect(settings.database_dsn) as conn:
        cur = await conn.execute(
            "SELECT cards FROM iot_id_holders WHERE id_hash = %s",
            (id_hash(number, key=settings.iot_id_hash_key.get_secret_value().encode()),),
        )
        row = await cur.fetchone()
    assert row == (1,)
