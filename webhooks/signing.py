"""Standard Webhooks signatures (symmetric, `v1`): pure functions, no I/O.

The signed content is `{webhook-id}.{webhook-timestamp}.{body}`, HMAC-SHA256 keyed with the
base64-decoded secret after its `whsec_` prefix, sent as `v1,<base64 signature>`. The
`webhook-signature` header is a space-separated list, so that during a secret rotation a
message carries a signature by the new secret and one by the old.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta

SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix, not a secret
SECRET_BYTES = 32
# The spec's bounds on a symmetric secret.
MIN_SECRET_BYTES = 24
MAX_SECRET_BYTES = 64
DEFAULT_TOLERANCE = timedelta(minutes=5)

HEADER_ID = "webhook-id"
HEADER_TIMESTAMP = "webhook-timestamp"
HEADER_SIGNATURE = "webhook-signature"


class WebhookVerificationError(ValueError):
    """A webhook that must not be trusted: a header missing or malformed, a timestamp out of
    tolerance, or no signature that matches."""


def generate_secret() -> str:
    """A new random signing secret, `whsec_<base64 of 32 random bytes>`."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key of a `whsec_` secret (the prefix is optional, as receivers often drop it)."""
    encoded = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("a webhook secret is base64 after the whsec_ prefix") from exc
    if not MIN_SECRET_BYTES <= len(key) <= MAX_SECRET_BYTES:
        raise ValueError(
            f"a webhook secret holds {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} bytes, not {len(key)}"
        )
    return key


def sign(secret: str, *, msg_id: str, timestamp: int, body: str | bytes) -> str:
    """One `v1,<base64>` signature of a message."""
    content = body.encode() if isinstance(body, str) else body
    signed = f"{msg_id}.{timestamp}.".encode() + content
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(
    signing_secrets: Iterable[str], *, msg_id: str, timestamp: int, body: str | bytes
) -> dict[str, str]:
    """The three Standard Webhooks headers, signed by each secret in turn."""
    signatures = [sign(s, msg_id=msg_id, timestamp=timestamp, body=body) for s in signing_secrets]
    if not signatures:
        raise ValueError("at least one secret signs a webhook")
    return {
        HEADER_ID: msg_id,
        HEADER_TIMESTAMP: str(timestamp),
        HEADER_SIGNATURE: " ".join(signatures),
    }


def verify(
    secret: str,
    *,
    body: str | bytes,
    headers: Mapping[str, str],
    tolerance: timedelta = DEFAULT_TOLERANCE,
    now: datetime | None = None,
) -> None:
    """Check a received webhook as a receiver would; raises WebhookVerificationError.

    Pass the raw body as received: JSON parsed and serialised again will not match.
    """
    lowered = {name.lower(): value for name, value in headers.items()}
    msg_id = lowered.get(HEADER_ID)
    timestamp_text = lowered.get(HEADER_TIMESTAMP)
    signature_list = lowered.get(HEADER_SIGNATURE)
    if not (msg_id and timestamp_text and signature_list):
        raise WebhookVerificationError("missing webhook-id, webhook-timestamp or signature")
    try:
        timestamp = int(timestamp_text)
    except ValueError:
        raise WebhookVerificationError("webhook-timestamp is not unix seconds") from None
    current = (now or datetime.now(UTC)).timestamp()
    if abs(current - timestamp) > tolerance.total_seconds():
        raise WebhookVerificationError("webhook-timestamp is outside the tolerance")
    expected = sign(secret, msg_id=msg_id, timestamp=timestamp, body=body).encode()
    for candidate in signature_list.split(" "):
        # Other schemes (v1a, later versions) may sit beside ours: skip what is not v1.
        if candidate.startswith("v1,") and hmac.compare_digest(candidate.encode(), expected):
            return
    raise WebhookVerificationError("no signature matches")
