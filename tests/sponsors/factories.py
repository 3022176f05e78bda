"""Vehicles over the real API as the platform makes them: the operator gives SIMs to their
owner, the automaker fits them and names a driver, the driver accepts."""

from __future__ import annotations

from typing import Any

import httpx

from tests.conftest import bearer


async def own_sims(
    http: httpx.AsyncClient, operator_key: str, *, owner_id: str, iccids: list[str]
) -> None:
    """Provision SIMs owned by a tenant (an automaker or a merchant)."""
    done = await http.post(
        "/v1/operator/sims", json={"iccids": iccids, "owner_id": owner_id},
        headers=bearer(operator_key),
    )  # fmt: skip
    assert done.status_code == 200, done.text


async def accept(http: httpx.AsyncClient, driver: dict[str, str], vin: str) -> None:
    """The driver accepts the vehicle's invitation."""
    done = await http.post(f"/v1/driver/vehicle-invitations/{vin}/accept", headers=driver)
    assert done.status_code == 204, done.text


async def fit_vehicle(
    http: httpx.AsyncClient,
    operator_key: str,
    *,
    automaker_id: str,
    automaker: dict[str, str],
    vin: str,
    iccids: list[str],
    model: str = "Aion Y",
    fleet: str | None = None,
    driver_id: str | None = None,
    driver: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A vehicle of the automaker with SIMs it owns; a driver whose headers are given accepts
    it (only named otherwise). Returns the vehicle as the automaker sees it."""
    await own_sims(http, operator_key, owner_id=automaker_id, iccids=iccids)
    fitted = await http.put(
        f"/v1/sponsor/vehicles/{vin}",
        json={"model": model, "fleet": fleet, "driver_id": driver_id, "iccids": iccids},
        headers=automaker,
    )  # fmt: skip
    assert fitted.status_code == 200, fitted.text
    if driver is not None:
        await accept(http, driver, vin)
    found: dict[str, Any] = fitted.json()
    return found
