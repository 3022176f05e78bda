"""An IoT card's coverage message: its plan pays while it is active; a block (here, another
device's IMEI) says so on the retained message, and clearing it says so again."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx

from flowbill.settings import Settings
from ingest import mqtt_session
from tests.billing.cars import bill
from tests.iot_cards.factories import Store, active_card, buyer, new_imei


async def coverage_of(settings: Settings, iccid: str) -> dict[str, Any]:
    async with mqtt_session.broker_client(settings) as client:
        await client.subscribe(f"flowbill/v1/sims/{iccid}/coverage", qos=1)
        async with asyncio.timeout(10):
            async for message in client.messages:
                found: dict[str, Any] = json.loads(bytes(message.payload))  # type: ignore[arg-type]
                return found
    raise AssertionError("no coverage message")


async def test_a_blocked_card_is_told_so_and_an_unblocked_one_again(
    http: httpx.AsyncClient, settings: Settings, operator_key: str
) -> None:
    store = await Store(http, settings, operator_key).open(cards=1)
    _, holder = await buyer(settings)
    iccid, imei = await active_card(http, store, holder)
    await bill(settings)
    assert (await coverage_of(settings, iccid))["other_apps"] == {"payer": "plan"}

    reports = f"/v1/iot/cards/{iccid}/device-reports"
    moved = await http.post(reports, json={"imei": new_imei()}, headers=holder)
    assert moved.status_code == 200, moved.text
    await bill(settings)
    assert (await coverage_of(settings, iccid))["other_apps"] == {
        "payer": "blocked", "reason": "imei_mismatch",
    }  # fmt: skip

    back = await http.post(reports, json={"imei": imei}, headers=holder)
    assert back.json()["state"] == "active"
    await bill(settings)
    assert (await coverage_of(settings, iccid))["other_apps"] == {"payer": "plan"}
