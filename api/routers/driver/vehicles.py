"""Drivers: their vehicles, and who pays for each app on them right now."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel

from api.deps import ConnDep, DriverCaller
from api.params import Cursor, Limit
from billing.allocation import coverage
from flowbill.paging import DEFAULT_LIMIT, Page
from sponsors import service as sponsors
from sponsors.schemas import VehiclePublic

router = APIRouter(prefix="/v1/driver", tags=["driver"])


class DriverVehicle(BaseModel):
    vehicle: VehiclePublic
    coverage: dict[str, dict[str, Any] | None]


@router.get("/vehicles")
async def my_vehicles(
    conn: ConnDep, caller: DriverCaller, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> Page[DriverVehicle]:
    """Your vehicles by VIN, and per SIM the coverage last sent to it: which sponsor pays for
    each app, which apps your wallet pays for and which are blocked."""
    found = await sponsors.driver_vehicles(
        conn, driver_id=caller.tenant_id, limit=limit, cursor=cursor
    )
    return Page[DriverVehicle](
        items=[
            DriverVehicle(
                vehicle=v, coverage={i: await coverage.current(conn, i) for i in v.iccids}
            )
            for v in found.items
        ],
        next_cursor=found.next_cursor,
    )
