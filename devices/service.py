"""Issuing, rotating and revoking device credentials (the desired state in the database).

The broker follows through the reconciler (`devices.reconciler`), which rewrites its password
file and CRL from these rows and drops the connections of revoked devices. Services never
commit: the caller owns the transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

from devices import passwords, repository
from devices.ca import DeviceCa, IssuedCertificate
from devices.errors import CaUnavailable, CredentialExists, CredentialNotFound, DeviceSimNotFound
from devices.schemas import (
    CredentialKind,
    DeviceCredentialIssued,
    DeviceCredentialPublic,
    DeviceCredentialRequest,
)
from flowbill.db import Connection
from iot_cards.errors import CardNotFound
from iot_cards.service import cards
from sponsors import ownership


@dataclass(frozen=True)
class Issuer:
    """What issuing needs besides the database: the CA (None: certificates unavailable), how
    long a certificate lasts, and how long a rotated-out certificate still works."""

    ca: DeviceCa | None
    certificate_days: int
    rotation_overlap: timedelta

    def require_ca(self) -> DeviceCa:
        if self.ca is None:
            raise CaUnavailable("certificates need FLOWBILL_DEVICE_CA_DIR")
        return self.ca


async def _require_sim(conn: Connection, iccid: str, owner_id: UUID | None, now: datetime) -> None:
    # One answer for unknown, unprovisioned and another owner's SIM: a caller learns nothing
    # of SIMs that are not its own.
    if not await repository.provisioned(conn, [iccid]):
        raise DeviceSimNotFound(f"no SIM {iccid} of yours")
    if owner_id is not None and not await _owns(conn, iccid, owner_id, now):
        raise DeviceSimNotFound(f"no SIM {iccid} of yours")


async def _owns(conn: Connection, iccid: str, owner_id: UUID, now: datetime) -> bool:
    """The SIM's owner now (the operator sets it), or the IoT merchant holding the card."""
    if await ownership.owned_by(conn, [iccid], owner_id, now=now):
        return True
    try:
        await cards.find_card(conn, iccid, merchant_id=owner_id)
    except CardNotFound:
        return False
    return True


def _make(
    issuer: Issuer, iccid: str, kind: CredentialKind, csr: str | None, now: datetime
) -> tuple[repository.NewCredential, DeviceCredentialIssued]:
    if kind == "password":
        secret = passwords.new_secret()
        row = repository.NewCredential(
            iccid=iccid, kind=kind, password_hash=passwords.broker_hash(secret)
        )
        shown = DeviceCredentialIssued(
            iccid=iccid, kind=kind, issued_at=now, username=iccid, password=secret
        )
        return row, shown
    ca = issuer.require_ca()
    days = issuer.certificate_days
    cert: IssuedCertificate = (
        ca.issue_from_csr(iccid, csr, now=now, days=days)
        if csr is not None
        else ca.issue_with_new_key(iccid, now=now, days=days)
    )
    row = repository.NewCredential(
        iccid=iccid, kind=kind, serial=cert.serial,
        fingerprint_sha256=cert.fingerprint_sha256, not_after=cert.not_after,
    )  # fmt: skip
    shown = DeviceCredentialIssued(
        iccid=iccid, kind=kind, issued_at=now, username=iccid,
        certificate_pem=cert.certificate_pem, private_key_pem=cert.private_key_pem,
        ca_certificate_pem=ca.certificate_pem, serial=cert.serial, not_after=cert.not_after,
    )  # fmt: skip
    return row, shown


async def issue(
    conn: Connection,
    issuer: Issuer,
    *,
    iccid: str,
    request: DeviceCredentialRequest,
    owner_id: UUID | None,
    now: datetime,
) -> DeviceCredentialIssued:
    """Issue a SIM's first (or next, after a revocation) credential, shown once. `owner_id`:
    the caller must own the SIM now (None: the operator)."""
    await _require_sim(conn, iccid, owner_id, now)
    if await repository.current(conn, [iccid]):
        raise CredentialExists(f"SIM {iccid} has a current credential: rotate or revoke it")
    row, shown = _make(issuer, iccid, request.kind, request.csr, now)
    await repository.insert(conn, [row], now=now)
    return shown


async def rotate(
    conn: Connection,
    issuer: Issuer,
    *,
    iccid: str,
    request: DeviceCredentialRequest,
    owner_id: UUID | None,
    now: datetime,
) -> DeviceCredentialIssued:
    """Replace the current credential with a new one (of either kind). A certificate stays
    accepted for the rotation overlap, so a device can switch without a gap; a password
    ends at once (the broker keeps one password per user name)."""
    await _require_sim(conn, iccid, owner_id, now)
    old = (await repository.current(conn, [iccid])).get(iccid)
    if old is None:
        raise CredentialNotFound(f"SIM {iccid} has no current credential to rotate")
    until = now + issuer.rotation_overlap if old.kind == "certificate" else now
    row, shown = _make(issuer, iccid, request.kind, request.csr, now)
    await repository.retire(conn, [old.credential_id], at=until)
    await repository.insert(conn, [row], now=now)
    return shown.model_copy(update={"previous_valid_until": until})


async def revoke(
    conn: Connection, *, iccid: str, owner_id: UUID | None, now: datetime
) -> list[DeviceCredentialPublic]:
    """Revoke every credential of the SIM still accepted (the current one and any in its
    overlap): the broker refuses them and drops their connections within seconds."""
    await _require_sim(conn, iccid, owner_id, now)
    revoked = await repository.revoke_all(conn, iccid, now=now)
    if not revoked:
        raise CredentialNotFound(f"SIM {iccid} has no credential to revoke")
    return [DeviceCredentialPublic.model_validate(r) for r in revoked]


async def credentials(
    conn: Connection, *, iccid: str, owner_id: UUID | None, now: datetime
) -> list[DeviceCredentialPublic]:
    """Every credential the SIM ever had, oldest first, without secrets."""
    await _require_sim(conn, iccid, owner_id, now)
    return [DeviceCredentialPublic.model_validate(r) for r in await repository.history(conn, iccid)]


async def issue_many(
    conn: Connection,
    issuer: Issuer,
    iccids: Sequence[str],
    *,
    kind: CredentialKind,
    now: datetime,
) -> list[DeviceCredentialIssued]:
    """Provisioning: a credential for each of these provisioned SIMs that has none, shown
    once. A SIM that already has one keeps it (a repeated import issues nothing twice)."""
    wanted = sorted(set(iccids))
    provisioned = await repository.provisioned(conn, wanted)
    missing = set(wanted) - set(provisioned)
    if missing:
        raise DeviceSimNotFound("SIMs not provisioned: " + ", ".join(sorted(missing)[:20]))
    have = await repository.current(conn, provisioned)
    made = [_make(issuer, i, kind, None, now) for i in provisioned if i not in have]
    await repository.insert(conn, [row for row, _ in made], now=now)
    return [shown for _, shown in made]
