"""The device-credential routes every audience that may manage a SIM's device identity has
(the operator: any SIM; an automaker or a merchant: the SIMs it owns now, another owner's SIM
answering 404), made once and mounted under each audience's prefix.

No `from __future__ import annotations` here: FastAPI reads the routes' annotations, which
name the audience's caller dependency given to the factory."""

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, status

from api.deps import ConnDep, DeviceIssuerDep
from devices import service as devices
from devices.schemas import DeviceCredentialIssued, DeviceCredentialPublic, DeviceCredentialRequest
from ingest.schemas import Iccid

IccidPath = Annotated[Iccid, Path(description="The SIM's ICCID (Luhn-checked).")]


def device_credential_router(prefix: str, caller: Any, *, owned: bool) -> APIRouter:
    """The issue, rotate, revoke and list routes under `prefix`, for tenants admitted by
    the `caller` dependency; `owned`: only for the SIMs the caller owns now."""
    router = APIRouter(prefix=prefix, tags=["device identity"])

    def owner(who: Any) -> Any:
        return who.tenant_id if owned else None

    @router.post("/{iccid}/device-credentials", status_code=status.HTTP_201_CREATED)
    async def issue_device_credential(
        conn: ConnDep,
        who: caller,
        issuer: DeviceIssuerDep,
        iccid: IccidPath,
        body: DeviceCredentialRequest,
    ) -> DeviceCredentialIssued:
        """Issue the SIM's device credential, shown once: a password (the user name is the
        ICCID), or a client certificate for the key of `csr` or for a key pair made for you.
        A SIM with a current credential answers 409: rotate it instead."""
        return await devices.issue(
            conn, issuer, iccid=iccid, request=body, owner_id=owner(who), now=datetime.now(UTC)
        )

    @router.post("/{iccid}/device-credentials/rotate", status_code=status.HTTP_201_CREATED)
    async def rotate_device_credential(
        conn: ConnDep,
        who: caller,
        issuer: DeviceIssuerDep,
        iccid: IccidPath,
        body: DeviceCredentialRequest,
    ) -> DeviceCredentialIssued:
        """Replace the SIM's credential with a new one, shown once. The old certificate is
        accepted until `previous_valid_until`; an old password ends at once."""
        return await devices.rotate(
            conn, issuer, iccid=iccid, request=body, owner_id=owner(who), now=datetime.now(UTC)
        )

    @router.delete("/{iccid}/device-credentials")
    async def revoke_device_credentials(
        conn: ConnDep, who: caller, iccid: IccidPath
    ) -> list[DeviceCredentialPublic]:
        """Revoke the SIM's credentials: the broker refuses them, and drops the device's
        connection, within seconds."""
        return await devices.revoke(conn, iccid=iccid, owner_id=owner(who), now=datetime.now(UTC))

    @router.get("/{iccid}/device-credentials")
    async def list_device_credentials(
        conn: ConnDep, who: caller, iccid: IccidPath
    ) -> list[DeviceCredentialPublic]:
        """Every credential the SIM has had, oldest first, without secrets."""
        return await devices.credentials(
            conn, iccid=iccid, owner_id=owner(who), now=datetime.now(UTC)
        )

    return router
