"""The IoT part of the demo runs its story end to end over the API."""

from __future__ import annotations

import asyncio

from devstack.iot_cards_demo import run_iot_demo


async def test_the_demo_story_runs(api_url: str, operator_key: str) -> None:
    # The demo is a blocking client: run it beside the API's event loop.
    report = await asyncio.to_thread(run_iot_demo, api_url, operator_key, buyers=5)
    assert report.cards_imported == 9
    assert report.orders["purchase paid"] == 5
    assert report.orders["recharge paid"] == 2
    assert report.verifications["verified"] == 5
    assert report.cards["blocked"] == 1
    assert report.cards["terminated"] == 1
    assert report.invoices["red issued"] == 1
    assert report.sample_pdf_bytes > 1000
    assert report.statement["refunds"] == 1
    assert all(line for line in report.lines())
