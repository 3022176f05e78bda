"""Which party signed a callback: each outside party has its own secret (docs/security.md)."""

from __future__ import annotations

import time

from fastapi import Request

from flowbill.errors import Unauthenticated
from flowbill.settings import CallbackParty, Settings
from wallet.gateways import SIGNATURE_HEADER, verify_callback


class InvalidSignature(Unauthenticated):
    type_ = "invalid-signature"
    title = "The callback's signature does not verify"


async def verified_body(request: Request, settings: Settings, *, party: CallbackParty) -> bytes:
    """The callback's body, once it verified with `party`'s secret (or its previous one while
    a rotation overlaps); 401 otherwise."""
    body = await request.body()
    header = request.headers.get(SIGNATURE_HEADER)
    if not verify_callback(settings.callback_secrets(party), body, header, now=time.time()):
        raise InvalidSignature(
            f"sign {party} callbacks with the {party} party's secret, within five minutes"
        )
    return body
