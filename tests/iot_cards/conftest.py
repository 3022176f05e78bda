"""Fixtures of the IoT card tests: the simulated identity-check provider and invoicing service,
served over real HTTP for the whole session, and every simulator back to a good day."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from flowbill.settings import Settings
from simulator.iot_gateways import IotBehaviour, create_iot_gateway_app
from tests.conftest import CALLBACK_SECRETS, serving
from tests.iot_cards.factories import behave_iot
from tests.wallet.factories import behave


@pytest.fixture(scope="session")
async def iot_gateway_url(settings: Settings) -> AsyncIterator[str]:
    app = create_iot_gateway_app(IotBehaviour(), callback_secret=CALLBACK_SECRETS["identity"])
    async with serving(app) as url:
        # The API reads its settings object at each request: point it at this simulator.
        settings.iot_gateway_url = url
        yield url


@pytest.fixture(autouse=True)
async def good_day(gateway_url: str, iot_gateway_url: str) -> None:
    await behave(gateway_url)
    await behave_iot(iot_gateway_url)
