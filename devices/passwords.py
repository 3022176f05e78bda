"""Device passwords: 256 random bits, kept only as the broker's own hash.

Mosquitto's password file holds `$7$<iterations>$<salt>$<hash>`: PBKDF2-HMAC-SHA512 over a
12-byte salt (`mosquitto_passwd` writes the same). Flowbill computes it at issue time, stores
it, and writes it into the broker's password file; the secret itself is shown once and never
stored. 101 iterations is the broker's default and enough here: the secret has 256 bits of
entropy, so the hash is not there to slow a guesser down, and a fleet reconnecting at once
must not cost the broker seconds of CPU.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

ITERATIONS = 101
_SALT_BYTES = 12


def new_secret() -> str:
    """A fresh 256-bit device password, URL-safe text."""
    return secrets.token_urlsafe(32)


def broker_hash(secret: str, *, salt: bytes | None = None, iterations: int = ITERATIONS) -> str:
    """The `$7$` hash Mosquitto's password file takes for this secret."""
    salt = salt if salt is not None else secrets.token_bytes(_SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", secret.encode(), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify(secret: str, stored: str) -> bool:
    """Whether the secret matches a stored `$7$` hash."""
    try:
        _, kind, iterations, salt, _digest = stored.split("$")
        if kind != "7":
            return False
        expected = broker_hash(secret, salt=base64.b64decode(salt), iterations=int(iterations))
    except ValueError:
        return False
    return hmac.compare_digest(expected, stored)
