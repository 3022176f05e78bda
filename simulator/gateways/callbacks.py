"""Signed callbacks that tell our service what a pending request came to."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping

import httpx

from flowbill.settings import CallbackParty
from wallet.gateways import CALLBACK_PARTY, SIGNATURE_HEADER, sign_callback

# One logger name for the whole simulator, whichever of its modules speaks.
log = logging.getLogger(__package__)

CALLBACK_ATTEMPTS = 5
CALLBACK_FIRST_BACKOFF_SECONDS = 0.2
CALLBACK_TIMEOUT_SECONDS = 5.0


class CallbackSender:
    """Delivers callbacks over one HTTP client, opened at the first callback, each signed
    with the secret of the party that sends its kind."""

    def __init__(self, secrets: Mapping[CallbackParty, str]) -> None:
        self._secrets = dict(secrets)
        self._client: httpx.AsyncClient | None = None

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()

    async def deliver(self, url: str, payload: Mapping[str, object]) -> None:
        """POST a signed callback, retrying with backoff; a receiver's failure is only logged."""
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=CALLBACK_TIMEOUT_SECONDS)
        body = json.dumps(payload, separators=(",", ":")).encode()
        secret = self._secrets[CALLBACK_PARTY[str(payload["kind"])]]
        extra = {"kind": payload["kind"], "request_id": payload["request_id"]}
        for attempt in range(1, CALLBACK_ATTEMPTS + 1):
            headers = {
                "content-type": "application/json",
                # Signed afresh for each attempt: the receiver rejects stale timestamps.
                SIGNATURE_HEADER: sign_callback(secret, body, now=time.time()),
            }
            try:
                response = await self._client.post(url, content=body, headers=headers)
            except (httpx.HTTPError, httpx.InvalidURL) as exc:
                error = type(exc).__name__
            else:
                if response.is_success:
                    log.info("callback delivered", extra={**extra, "attempt": attempt})
                    return
                error = f"http_{response.status_code}"
            log.warning(
                "callback delivery failed", extra={**extra, "attempt": attempt, "error": error}
            )
            if attempt < CALLBACK_ATTEMPTS:
                await asyncio.sleep(CALLBACK_FIRST_BACKOFF_SECONDS * 2 ** (attempt - 1))
        log.error("callback given up", extra=extra)
