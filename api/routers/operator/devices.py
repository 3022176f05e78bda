"""The operator's side of device identity: issue, rotate and revoke any SIM's credentials."""

from __future__ import annotations

from api.deps import OperatorCaller
from api.device_credentials import device_credential_router

router = device_credential_router("/v1/operator/sims", OperatorCaller, owned=False)
