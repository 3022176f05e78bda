"""Drivers: their vehicles, and who pays for each app on them right now."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Response, status
from pydantic import BaseModel

from api.deps import ConnDep, DriverCaller
from api.params import Cursor, Limit
from billing.allocation import coverage
from flowbill.paging import DEFAULT_LIMIT, Page
from sponsors import ownership
from sponsors import service as sponsors
from sponsors.schemas import VehicleInvitation, VehiclePublic, Vin

router = APIRouter(prefix="/v1/driver", tags=["driver"])

VinPath = Annotated[Vin, Path(description="The vehicle identification number (17 characters).")]


class DriverVehicle(BaseModel):
    vehicle: VehiclePublic
    coverage: dict[str, dict[str, Any] | None]


@router.get("/vehicles")
async def my_vehicles(
    conn: ConnDep, caller: DriverCaller, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> Page[DriverVehicle]:
    """The vehicles you accepted, by VIN, and per SIM the coverage last sent to it: which
    sponsor pays for each app, which apps your wallet pays for and which are blocked."""
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


@router.get("/vehicle-invitations")
async def my_invitations(
    conn: ConnDep, caller: DriverCaller, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> Page[VehicleInvitation]:
    """Vehicles whose automakers named you as their driver, waiting for your answer, by VIN.
    Until you accept, your wallet never pays for them."""
    return await ownership.invitations(conn, driver_id=caller.tenant_id, limit=limit, cursor=cursor)


@router.post("/vehicle-invitations/{vin}/accept", status_code=status.HTTP_204_NO_CONTENT)
async def accept_invitation(conn: ConnDep, caller: DriverCaller, vin: VinPath) -> Response:
    """Accept the vehicle: from now on your wallet pays for its traffic that no sponsor pays."""
    await ownership.accept(conn, driver_id=caller.tenant_id, vin=vin, now=datetime.now(UTC))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/vehicle-invitations/{vin}/decline", status_code=status.HTTP_204_NO_CONTENT)
async def decline_invitation(conn: ConnDep, caller: DriverCaller, vin: VinPath) -> Response:
    """Decline the vehicle: your wallet never pays for it."""
    await ownership.decline(conn, driver_id=caller.tenant_id, vin=vin, now=datetime.now(UTC))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.delete("/vehicles/{vin}", status_code=status.HTTP_204_NO_CONTENT)
async def leave_vehicle(conn: ConnDep, caller: DriverCaller, vin: VinPath) -> Response:
    """End your link to a vehicle you accepted: your wallet stops paying for it from now on
    (what it paid before stays)."""
    await ownership.leave(conn, driver_id=caller.tenant_id, vin=vin, now=datetime.now(UTC))
    return Response(status_code=status.HTTP_204_NO_CONTENT)
