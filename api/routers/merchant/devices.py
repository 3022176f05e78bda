"""An IoT merchant's side of device identity: the credentials of the SIMs it owns now (another
owner's SIM, or one it no longer owns, answers 404)."""

from __future__ import annotations

from api.deps import MerchantCaller
from api.device_credentials import device_credential_router

router = device_credential_router("/v1/merchant/sims", MerchantCaller, owned=True)
