"""The platform operator: tenants and keys, SIM provisioning, the health of metering."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Path, Query, status

from api.deps import ConnDep, DeviceIssuerDep, OperatorCaller
from api.params import Cursor, Limit
from devices import service as devices
from devices.schemas import CredentialKind, ProvisionedWithCredentials
from flowbill.paging import DEFAULT_LIMIT, Page
from ingest import service as metering
from ingest.protocol import RejectReason
from ingest.schemas import (
    BootGaps,
    BootSequencePublic,
    HourlyUsagePublic,
    Iccid,
    RejectPublic,
    UnprovisionedSimPublic,
)
from sponsors import ownership
from sponsors.schemas import SimOwnerChange, SimOwnerPublic, SimProvisionOwned
from tenants import service as tenants
from tenants.schemas import (
    ApiKeyCreate,
    ApiKeyIssued,
    ApiKeyPublic,
    Role,
    TenantCreate,
    TenantCreated,
    TenantPublic,
)

router = APIRouter(prefix="/v1/operator", tags=["operator"])

IccidPath = Annotated[Iccid, Path(description="The SIM's ICCID (Luhn-checked).")]


@router.post("/tenants", status_code=status.HTTP_201_CREATED)
async def create_tenant(conn: ConnDep, _: OperatorCaller, body: TenantCreate) -> TenantCreated:
    """Create a sponsor, merchant, driver or operator tenant with its first API key."""
    return await tenants.create_tenant(
        conn, name=body.name, role=body.role, key_label=body.key_label
    )


@router.get("/tenants")
async def list_tenants(
    conn: ConnDep,
    _: OperatorCaller,
    role: Role | None = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Page[TenantPublic]:
    """Tenants (of a role, if given), oldest first."""
    return await tenants.list_tenants(conn, role=role, limit=limit, cursor=cursor)


@router.get("/tenants/{tenant_id}")
async def get_tenant(conn: ConnDep, _: OperatorCaller, tenant_id: UUID) -> TenantPublic:
    """One tenant."""
    return await tenants.get_tenant(conn, tenant_id)


@router.post("/tenants/{tenant_id}/disable")
async def disable_tenant(conn: ConnDep, _: OperatorCaller, tenant_id: UUID) -> TenantPublic:
    """Disable a tenant: every one of its keys stops working."""
    return await tenants.set_disabled(conn, tenant_id, disabled=True)


@router.post("/tenants/{tenant_id}/enable")
async def enable_tenant(conn: ConnDep, _: OperatorCaller, tenant_id: UUID) -> TenantPublic:
    """Enable a disabled tenant again."""
    return await tenants.set_disabled(conn, tenant_id, disabled=False)


@router.get("/tenants/{tenant_id}/keys")
async def list_tenant_keys(
    conn: ConnDep,
    _: OperatorCaller,
    tenant_id: UUID,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Page[ApiKeyPublic]:
    """A tenant's keys, without secrets, oldest first."""
    await tenants.get_tenant(conn, tenant_id)
    return await tenants.list_keys(conn, tenant_id, limit=limit, cursor=cursor)


@router.post("/tenants/{tenant_id}/keys", status_code=status.HTTP_201_CREATED)
async def issue_tenant_key(
    conn: ConnDep, _: OperatorCaller, tenant_id: UUID, body: ApiKeyCreate
) -> ApiKeyIssued:
    """Issue another key for a tenant; the secret is shown once."""
    return await tenants.issue_key(conn, tenant_id=tenant_id, label=body.label)


@router.delete("/tenants/{tenant_id}/keys/{key_id}")
async def revoke_tenant_key(
    conn: ConnDep, _: OperatorCaller, tenant_id: UUID, key_id: str
) -> ApiKeyPublic:
    """Revoke a tenant's key."""
    return await tenants.revoke_key(conn, tenant_id=tenant_id, key_id=key_id)


@router.post("/sims", status_code=status.HTTP_200_OK)
async def provision_sims(
    conn: ConnDep,
    _: OperatorCaller,
    issuer: DeviceIssuerDep,
    body: SimProvisionOwned,
    device_credentials: Annotated[
        CredentialKind | None,
        Query(description="Also issue each SIM's device credential of this kind (shown once)."),
    ] = None,
) -> ProvisionedWithCredentials:
    """Provision SIMs by ICCID, owned by `owner_id` (an automaker or an IoT merchant; only
    the owner may fit them). A SIM already owned by another tenant is refused (409): change
    its owner instead. Usage they reported before provisioning is kept. With
    `device_credentials`, each SIM without a device credential gets one, in the same
    transaction, shown once in the answer."""
    now = datetime.now(UTC)
    created = await metering.provision_sims(conn, body.iccids, label=body.label)
    if body.owner_id is not None:
        await ownership.assign_provisioned(conn, body.iccids, owner_id=body.owner_id, now=now)
    issued = (
        await devices.issue_many(conn, issuer, body.iccids, kind=device_credentials, now=now)
        if device_credentials is not None
        else []
    )
    return ProvisionedWithCredentials(
        requested=len(set(body.iccids)), newly_provisioned=created, device_credentials=issued
    )


@router.post("/sims/{iccid}/owner")
async def change_sim_owner(
    conn: ConnDep, _: OperatorCaller, iccid: IccidPath, body: SimOwnerChange
) -> SimOwnerPublic:
    """Give a SIM another owner (or none) from `effective_from` on (default now, never in the
    past); the history stays. A change from now takes the SIM out of another automaker's
    vehicle."""
    return await ownership.change_owner(conn, iccid=iccid, body=body, now=datetime.now(UTC))


@router.get("/sims/{iccid}/owners")
async def sim_owners(
    conn: ConnDep,
    _: OperatorCaller,
    iccid: IccidPath,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Page[SimOwnerPublic]:
    """A SIM's owners over time, oldest first."""
    return await ownership.owner_history(conn, iccid=iccid, limit=limit, cursor=cursor)


@router.get("/sims/unprovisioned")
async def unprovisioned_sims(
    conn: ConnDep, _: OperatorCaller, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> Page[UnprovisionedSimPublic]:
    """ICCIDs that report usage but are not provisioned, most recently seen first."""
    return await metering.unprovisioned_sims(conn, limit=limit, cursor=cursor)


@router.get("/sims/{iccid}/usage/hourly")
async def sim_hourly_usage(
    conn: ConnDep,
    _: OperatorCaller,
    iccid: IccidPath,
    since: datetime,
    until: datetime,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Page[HourlyUsagePublic]:
    """Per-app hourly usage of one SIM (UTC hours, from the rollup), by hour and app."""
    return await metering.hourly_usage_page(
        conn, iccid=iccid, since=since, until=until, limit=limit, cursor=cursor
    )


@router.get("/ingest/rejects")
async def list_rejects(
    conn: ConnDep,
    _: OperatorCaller,
    reason: RejectReason | None = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Page[RejectPublic]:
    """Messages that could not be stored as usage, newest first, with their raw bytes."""
    return await metering.rejects(conn, reason=reason, limit=limit, cursor=cursor)


@router.get("/ingest/rejects/summary")
async def reject_summary(conn: ConnDep, _: OperatorCaller) -> dict[str, int]:
    """How many rejected messages are kept, per reason."""
    return await metering.reject_counts(conn)


@router.get("/ingest/gaps")
async def list_gaps(
    conn: ConnDep, _: OperatorCaller, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> Page[BootSequencePublic]:
    """Device boots with lost reports (sequence numbers never received), most recently seen
    first."""
    return await metering.boots_with_gaps(conn, limit=limit, cursor=cursor)


@router.get("/ingest/gaps/{iccid}/{boot}")
async def boot_gaps(
    conn: ConnDep,
    _: OperatorCaller,
    iccid: IccidPath,
    boot: Annotated[int, Path(ge=0, le=2**31 - 1)],
) -> BootGaps:
    """The missing sequence numbers of one boot of one SIM."""
    missing = await metering.missing_reports(conn, iccid=iccid, boot=boot)
    return BootGaps(iccid=iccid, boot=boot, missing=missing)
