"""Fixtures of the IoT card tests: every test starts with the simulated outside parties on a
good day (the simulators themselves are the session's, in tests/conftest.py)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
async def _on_a_good_day(good_day: None) -> None:
    return None
