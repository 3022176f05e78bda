"""Drivers: their vehicles, and who pays for each app on them right now."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel

from api.deps import ConnDep, DriverCaller
from billing.allocation import coverage
from sponsors import service as sponsors
from sponsors.schemas import VehiclePublic

router = APIRouter(prefix="/v1/driver", tags=["driver"])


class DriverVehicle(BaseModel):
    vehicle: VehiclePublic
    coverage: dict[str, dict[str, Any] | None]


@router.get("/vehicles")
async def my_vehicles(conn: ConnDep, caller: DriverCaller) -> list[DriverVehicle]:
    """Your vehicles, and per SIM the coverage last sent to it: which sponsor pays for each
    app, which apps your wallet pays for and which are blocked."""
    return [
        DriverVehicle(vehicle=v, coverage={i: await coverage.current(conn, i) for i in v.iccids})
        for v in await sponsors.vehicles_of_driver(conn, caller.tenant_id)
    ]
