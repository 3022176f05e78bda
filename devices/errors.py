"""The device identity domain's errors."""

from __future__ import annotations

from flowbill.errors import Conflict, InvalidInput, NotFound, Unavailable


class DeviceSimNotFound(NotFound):
    """Unknown, unprovisioned, or another owner's SIM: all look the same to the caller."""

    type_ = "sim-not-found"
    title = "SIM not found"


class CredentialNotFound(NotFound):
    type_ = "device-credential-not-found"
    title = "No current device credential"


class CredentialExists(Conflict):
    type_ = "device-credential-exists"
    title = "The SIM already has a current device credential"


class InvalidCsr(InvalidInput):
    type_ = "invalid-csr"
    title = "Invalid certificate signing request"


class CaUnavailable(Unavailable):
    type_ = "device-ca-unavailable"
    title = "The device CA is not configured"
