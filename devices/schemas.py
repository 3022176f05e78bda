"""Device credentials at the API's edge."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ingest.schemas import SimProvisioned
from iot_cards.schemas import ImportReport

CredentialKind = Literal["password", "certificate"]


class DeviceCredentialRequest(BaseModel):
    """`password`: a username (the ICCID) and a random password. `certificate`: a client
    certificate from the device CA for the key of `csr` (PEM, ECDSA P-256) or, without one,
    for a key pair made for the caller and returned once."""

    model_config = ConfigDict(extra="forbid")

    kind: CredentialKind = "certificate"
    csr: str | None = Field(default=None, max_length=8192)


class DeviceCredentialPublic(BaseModel):
    """A credential as it is kept: never its secret."""

    model_config = ConfigDict(from_attributes=True)

    iccid: str
    kind: CredentialKind
    serial: str | None
    fingerprint_sha256: str | None
    not_after: datetime | None
    issued_at: datetime
    retires_at: datetime | None
    revoked_at: datetime | None


class DeviceCredentialIssued(BaseModel):
    """A new credential, shown once: Flowbill keeps no copy of the password or the key."""

    iccid: str
    kind: CredentialKind
    issued_at: datetime
    username: str
    password: str | None = None
    certificate_pem: str | None = None
    private_key_pem: str | None = None
    ca_certificate_pem: str | None = None
    serial: str | None = None
    not_after: datetime | None = None
    # On a rotation: the credential it replaces is accepted until then.
    previous_valid_until: datetime | None = None


class ProvisionedWithCredentials(SimProvisioned):
    """Provisioned SIMs and, when asked for, the device credentials issued with them (shown
    once; SIMs that already had one keep it and are not listed)."""

    device_credentials: list[DeviceCredentialIssued] = Field(default_factory=list)


class CardImportWithCredentials(ImportReport):
    """An imported card batch and, when asked for, its cards' device credentials (shown
    once)."""

    device_credentials: list[DeviceCredentialIssued] = Field(default_factory=list)
