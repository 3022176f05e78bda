"""Alerts end to end: reports over MQTT cross a policy's cap in the allocation run, and the
sponsor's endpoint receives signed webhooks it can verify."""

from __future__ import annotations

import json

import httpx
import psycopg
import pytest

from flowbill.settings import Settings
from flowbill.units import MB
from tests.billing.cars import Car, bill
from tests.webhooks.conftest import Receiver
from tests.webhooks.test_api import Pool, create, deliver
from webhooks import signing

pytestmark = pytest.mark.usefixtures("own_queue", "ingest_workers")


async def test_a_cap_crossed_by_the_run_reaches_the_sponsor_signed_once_per_threshold(
    http: httpx.AsyncClient,
    settings: Settings,
    operator_key: str,
    committed_conn: psycopg.AsyncConnection,
    pool: Pool,
    receiver: Receiver,
) -> None:
    car = await Car(http, settings).open(operator_key, music_cap=10 * MB)
    url = receiver.plan("music-alerts")
    endpoint = await create(http, car.music, url=url, event_types=["policy.cap_threshold_reached"])
    thresholds = await http.put(
        "/v1/sponsor/alert-thresholds",
        json={"cap_percents": [50, 100], "budget_percents": [100]},
        headers=car.music,
    )
    assert thresholds.status_code == 200, thresholds.text
    await car.send(committed_conn, [car.report({"music.qq": 6 * MB})])
    await bill(settings)
    await car.send(committed_conn, [car.report({"music.qq": 6 * MB})])
    await bill(settings)
    await bill(settings)  # a rerun sends nothing more

    assert await deliver(pool) == 2
    got = receiver.at("music-alerts")
    bodies = []
    for request in got:
        signing.verify(str(endpoint["secret"]), body=request.body, headers=request.headers)
        bodies.append(json.loads(request.body))
    assert sorted(b["data"]["percent"] for b in bodies) == [50, 100]
    full = next(b for b in bodies if b["data"]["percent"] == 100)
    assert full["type"] == "policy.cap_threshold_reached"
    assert full["data"] == {
        "policy_id": car.policies["music"]["policy_id"], "iccid": car.iccid,
        "period": full["data"]["period"], "percent": 100, "cap_bytes": 10 * MB,
        "used_bytes": 10 * MB,
    }  # fmt: skip
