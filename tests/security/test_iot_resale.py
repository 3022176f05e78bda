"""IoT cards on release and resale: a command a holder scheduled belongs to that holding. A card
released (its order refunded before activation) and sold to someone else drops it, so the
former holder's suspend never reaches the next holder; and each holder sees the history of its
own holding only."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from flowbill.settings import Settings
from tests.conftest import assert_problem
from tests.iot_cards.factories import (
    Store,
    active_card,
    buyer,
    idem,
    paid_card,
    poll,
    sweep,
)

# The simulated outside parties start each test on a good day.
pytestmark = pytest.mark.usefixtures("good_day")


async def refund(http: httpx.AsyncClient, store: Store, order_id: str) -> None:
    asked = await http.post(
        f"/v1/merchant/iot/orders/{order_id}/refunds",
        json={"reason": "changed their mind"},
        headers=idem(store.merchant),
    )
    assert asked.status_code == 202, asked.text
    done = await poll(
        http,
        store.merchant,
        f"/v1/merchant/iot/orders/{order_id}/refund",
        field="state",
        until={"refunded", "failed"},
    )
    assert done["state"] == "refunded", done


async def schedule_suspend(
    http: httpx.AsyncClient, holder: dict[str, str], iccid: str, due: datetime, reason: str = ""
) -> dict[str, object]:
    """The holder schedules a suspend of its card for `due`; returns the card."""
    scheduled = await http.post(
        f"/v1/iot/cards/{iccid}/commands",
        json={"command": "suspend", "reason": reason, "effective_at": due.isoformat()},
        headers=idem(holder),
    )
    assert scheduled.status_code == 200, scheduled.text
    card: dict[str, object] = scheduled.json()
    return card


async def a_card_in_use(
    http: httpx.AsyncClient, settings: Settings, operator_key: str
) -> tuple[Store, dict[str, str], str]:
    """A store of one card, sold to a holder who activated it: (store, holder, ICCID)."""
    store = await Store(http, settings, operator_key).open(cards=1)
    _, holder = await buyer(settings)
    iccid, _ = await active_card(http, store, holder)
    return store, holder, iccid


async def test_a_former_holder_s_scheduled_suspend_never_reaches_the_next_holder(
    http: httpx.AsyncClient, settings: Settings, operator_key: str
) -> None:
    store = await Store(http, settings, operator_key).open(cards=1)
    _, first = await buyer(settings)
    _, second = await buyer(settings)
    iccid, order = await paid_card(http, store, first)
    mine = f"/v1/iot/cards/{iccid}"

    # The first holder schedules a suspend for a moment after the card is sold on.
    due = datetime.now(UTC) + timedelta(seconds=2)
    scheduled = await schedule_suspend(http, first, iccid, due, reason="A's plan")
    assert scheduled["history"][-1]["status"] == "scheduled"

    # The order is refunded before activation: the card goes back to stock, and the
    # command with it.
    await refund(http, store, str(order["order_id"]))
    assert_problem(await http.get(mine, headers=first), 404, "card-not-found")
    merchant_view = (
        await http.get(f"/v1/merchant/iot/cards/{iccid}", headers=store.merchant)
    ).json()
    assert merchant_view["state"] == "inventory"
    dropped = [h for h in merchant_view["history"] if h["command"] == "suspend"]
    assert [(h["status"], h["reason"]) for h in dropped] == [
        ("skipped", "cancelled: the card was released")
    ]

    # The same card, sold to the second holder and activated.
    resold, _ = await active_card(http, store, second)
    assert resold == iccid
    await asyncio.sleep(max(0.0, (due - datetime.now(UTC)).total_seconds()) + 0.2)
    report = await sweep(http, operator_key)
    assert report["scheduled_applied"] == 0

    card = await http.get(mine, headers=second)
    assert card.status_code == 200, card.text
    assert (card.json()["state"], card.json()["suspended_by"]) == ("active", None)
    # The second holder sees its own holding only: nothing of the first holder's.
    history = card.json()["history"]
    assert [h["command"] for h in history] == ["sell", "submit_verification", "activate"]
    assert all("A's plan" not in h["reason"] for h in history)
    assert card.json()["verification"]["state"] == "verified"
    # The merchant still sees everything, and the dropped command once.
    full = (await http.get(f"/v1/merchant/iot/cards/{iccid}", headers=store.merchant)).json()
    assert [h["command"] for h in full["history"]] == [
        "sell", "suspend", "release", "sell", "submit_verification", "activate",
    ]  # fmt: skip
    assert [h["status"] for h in full["history"]].count("skipped") == 1
    # The first holder still cannot reach the card.
    assert_problem(await http.get(mine, headers=first), 404, "card-not-found")
    late = await http.post(f"{mine}/commands", json={"command": "suspend"}, headers=idem(first))
    assert_problem(late, 404, "card-not-found")
    assert (await http.get(mine, headers=second)).json()["state"] == "active"


async def test_commands_scheduled_by_the_holder_of_the_moment_still_apply(
    http: httpx.AsyncClient, settings: Settings, operator_key: str
) -> None:
    _, holder, iccid = await a_card_in_use(http, settings, operator_key)
    await schedule_suspend(http, holder, iccid, datetime.now(UTC) + timedelta(seconds=0.5))
    await asyncio.sleep(0.7)
    assert int(str((await sweep(http, operator_key))["scheduled_applied"])) >= 1
    card = (await http.get(f"/v1/iot/cards/{iccid}", headers=holder)).json()
    assert (card["state"], card["suspended_by"]) == ("suspended", "holder")
    assert card["history"][0]["command"] == "sell"


async def test_terminating_a_card_cancels_what_was_scheduled_for_it(
    http: httpx.AsyncClient, settings: Settings, operator_key: str
) -> None:
    store, holder, iccid = await a_card_in_use(http, settings, operator_key)
    await schedule_suspend(http, holder, iccid, datetime.now(UTC) + timedelta(days=30))
    ended = await http.post(
        f"/v1/merchant/iot/cards/{iccid}/commands",
        json={"command": "terminate"},
        headers=idem(store.merchant),
    )
    assert ended.status_code == 200, ended.text
    statuses = [(h["command"], h["status"]) for h in ended.json()["history"]]
    assert ("suspend", "skipped") in statuses
    assert ("suspend", "scheduled") not in statuses
