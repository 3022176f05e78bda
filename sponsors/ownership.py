"""Who owns a SIM, and which driver agreed to pay for a vehicle.

A SIM has at most one owner at a time (an automaker sponsor or an IoT merchant), set by the
operator only, from a moment on; the history stays. An automaker fits only the SIMs it owns.

Naming a driver on a vehicle invites them; the allocation run draws the wallet for the vehicle's
SIMs only while the link is accepted and current (it reads the link as it is when it allocates,
not as it was at each item's window): never before the driver accepts, never after the link
ends (the driver ends it, or the automaker names no or another driver). `vehicles.driver_id`
holds the accepted driver, kept in the same transaction as the link rows: it is what the
allocation run and the driver's lists read. Services never commit: the caller owns the transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from uuid import UUID

from flowbill import paging
from flowbill.db import Connection
from flowbill.paging import Page
from sponsors import ownership_repository as repository
from sponsors.errors import (
    EffectiveInThePast,
    InvalidSimOwner,
    InvitationNotFound,
    SimNotFound,
    SimNotOwned,
    SimOwnedByAnother,
    VehicleNotFound,
)
from sponsors.schemas import SimOwnerChange, SimOwnerPublic, VehicleInvitation
from tenants import service as tenants
from tenants.errors import TenantNotFound
from tenants.schemas import Role

_CLOCK_SKEW = timedelta(seconds=5)
# The roles whose tenants may own SIMs: automakers (sponsors) and IoT merchants.
OWNER_ROLES = frozenset({Role.SPONSOR, Role.MERCHANT})

# --- SIM owners --------------------------------------------------------------------------------


async def _require_owner_role(conn: Connection, owner_id: UUID) -> None:
    try:
        tenant = await tenants.get_tenant(conn, owner_id)
    except TenantNotFound:
        tenant = None
    if tenant is None or tenant.role not in OWNER_ROLES or tenant.disabled:
        raise InvalidSimOwner(f"{owner_id} is not an active automaker or merchant")


async def assign_provisioned(
    conn: Connection, iccids: Sequence[str], *, owner_id: UUID, now: datetime
) -> None:
    """Give newly provisioned SIMs their owner (the operator, when provisioning or importing).
    A SIM that already has this owner is left as it is; one with another owner is refused:
    that is an ownership change."""
    await _require_owner_role(conn, owner_id)
    await repository.provisioned(conn, iccids, for_update=True)
    current = await repository.owners_at(conn, iccids, now)
    taken = sorted(i for i, o in current.items() if o is not None and o != owner_id)
    if taken:
        raise SimOwnedByAnother(
            "SIMs owned by another tenant (change their owner instead): " + ", ".join(taken[:20]),
            iccids=taken[:100],
        )
    new = sorted(set(iccids) - {i for i, o in current.items() if o == owner_id})
    if new:
        await repository.set_owner(conn, new, owner_id=owner_id, effective_from=now, applied=True)


async def change_owner(
    conn: Connection, *, iccid: str, body: SimOwnerChange, now: datetime
) -> SimOwnerPublic:
    """Give a SIM another owner (or none) from a moment on (default now, never in the past).
    From that moment only the new owner may fit it; a change from now also takes it out of a
    vehicle of another automaker."""
    if not await repository.provisioned(conn, [iccid], for_update=True):
        raise SimNotFound(f"no provisioned SIM {iccid}")
    if body.owner_id is not None:
        await _require_owner_role(conn, body.owner_id)
    effective = body.effective_from or now
    if effective < now - _CLOCK_SKEW:
        raise EffectiveInThePast("`effective_from` must not be in the past")
    effective = max(effective, now)
    applied = effective <= now
    await repository.set_owner(
        conn, [iccid], owner_id=body.owner_id, effective_from=effective, applied=applied
    )
    if applied:
        await repository.unfit_from_others(conn, [iccid], now)
    history = await repository.owner_history(conn, iccid, after=effective - _EPSILON, limit=1)
    return SimOwnerPublic.model_validate(history[0])


_EPSILON = timedelta(microseconds=1)


async def apply_due_changes(conn: Connection, *, now: datetime, limit: int = 10_000) -> list[str]:
    """Apply the owner changes dated earlier that have taken effect by `now`: their SIMs leave
    the vehicles of automakers that no longer own them. Returns the SIMs taken out of a
    vehicle (their coverage changed). The billing run calls it before each batch."""
    due = await repository.due_changes(conn, now, limit=limit)
    if not due:
        return []
    gone = await repository.unfit_from_others(conn, sorted({iccid for iccid, _ in due}), now)
    await repository.mark_applied(conn, due)
    return gone


async def owner_changes_applied_since(conn: Connection, since: datetime) -> list[str]:
    """SIMs whose owner change took effect since a moment (they may have left a vehicle)."""
    return await repository.applied_since(conn, since)


async def owner_history(
    conn: Connection, *, iccid: str, limit: int, cursor: str | None
) -> Page[SimOwnerPublic]:
    """A SIM's owners, oldest first, a page at a time."""
    if not await repository.provisioned(conn, [iccid]):
        raise SimNotFound(f"no provisioned SIM {iccid}")
    (after,) = paging.decode_cursor(cursor, (datetime,), scope="sim-owners") if cursor else (None,)
    rows = await repository.owner_history(conn, iccid, after=after, limit=limit + 1)
    return paging.page(
        [SimOwnerPublic.model_validate(r) for r in rows],
        limit=limit, key=lambda o: (o.effective_from,), scope="sim-owners",
    )  # fmt: skip


async def owned_by(
    conn: Connection, iccids: Sequence[str], owner_id: UUID, *, now: datetime
) -> set[str]:
    """Those of these SIMs the tenant owns now."""
    return {i for i, o in (await repository.owners_at(conn, iccids, now)).items() if o == owner_id}


async def require_owned(
    conn: Connection, iccids: Sequence[str], owner_id: UUID, *, now: datetime
) -> None:
    """Refuse unless the tenant owns every one of these SIMs now (an unknown or unprovisioned
    ICCID has no owner)."""
    foreign = sorted(set(iccids) - await owned_by(conn, iccids, owner_id, now=now))
    if foreign:
        raise SimNotOwned(
            "SIMs that are not yours (unknown, unprovisioned or another tenant's): "
            + ", ".join(foreign),
            iccids=foreign,
        )


# --- Driver links ------------------------------------------------------------------------------


async def name_driver(conn: Connection, *, vin: str, driver_id: UUID | None, now: datetime) -> None:
    """The automaker names the vehicle's driver: the same one changes nothing; another (or
    none) ends the current link or withdraws the pending invitation, and invites the new one.
    The caller holds the vehicle's lock."""
    link = await repository.open_link(conn, vin)
    if (link.driver_id if link else None) == driver_id:
        return
    if link is not None:
        await repository.end(conn, link.link_id, at=now, by="automaker")
        if link.accepted_at is not None:
            await repository.set_vehicle_driver(conn, vin, None)
    if driver_id is not None:
        await repository.invite(conn, vin, driver_id, now)


async def invitations(
    conn: Connection, *, driver_id: UUID, limit: int, cursor: str | None
) -> Page[VehicleInvitation]:
    """The vehicles whose automakers named the driver and that wait for an answer, by VIN."""
    (after,) = paging.decode_cursor(cursor, (str,), scope="invitations") if cursor else (None,)
    rows = await repository.invitations_of(conn, driver_id, after=after, limit=limit + 1)
    return paging.page(
        [VehicleInvitation.model_validate(r) for r in rows],
        limit=limit, key=lambda i: (i.vin,), scope="invitations",
    )  # fmt: skip


async def pending_invitations(conn: Connection, driver_id: UUID) -> list[VehicleInvitation]:
    """Every invitation waiting for the driver's answer (a driver has a few)."""
    rows = await repository.invitations_of(conn, driver_id, after=None, limit=None)
    return [VehicleInvitation.model_validate(r) for r in rows]


async def _pending(conn: Connection, vin: str, driver_id: UUID) -> repository.LinkRow:
    await repository.lock_vehicle(conn, vin)
    link = await repository.open_link(conn, vin)
    if link is None or link.driver_id != driver_id or link.accepted_at is not None:
        raise InvitationNotFound(f"no invitation for vehicle {vin}")
    return link


async def accept(conn: Connection, *, driver_id: UUID, vin: str, now: datetime) -> None:
    """The driver accepts: from now on the wallet pays the user's share of the vehicle's SIMs."""
    link = await _pending(conn, vin, driver_id)
    await repository.accept(conn, link.link_id, now)
    await repository.set_vehicle_driver(conn, vin, driver_id)


async def decline(conn: Connection, *, driver_id: UUID, vin: str, now: datetime) -> None:
    """The driver declines: the wallet never pays for the vehicle."""
    link = await _pending(conn, vin, driver_id)
    await repository.decline(conn, link.link_id, now)


async def leave(conn: Connection, *, driver_id: UUID, vin: str, now: datetime) -> None:
    """The driver ends an accepted link: the wallet stops paying from now on."""
    await repository.lock_vehicle(conn, vin)
    link = await repository.open_link(conn, vin)
    if link is None or link.driver_id != driver_id or link.accepted_at is None:
        raise VehicleNotFound(f"no vehicle {vin}")
    await repository.end(conn, link.link_id, at=now, by="driver")
    await repository.set_vehicle_driver(conn, vin, None)
