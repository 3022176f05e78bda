"""Browser sessions of the driver page: signing in (with an API key or a one-time link),
the session behind a cookie, CSRF tokens, signing out.

A session token is 32 random bytes in an HttpOnly cookie; the database keeps only its
SHA-256, so neither a leaked table nor a log line can sign anyone in. Each session has its
own CSRF token, which every form posts back and `check_csrf` compares in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

from api.web import repository
from flowbill.db import Connection
from flowbill.errors import FlowbillError
from tenants import service as tenants
from tenants.errors import InvalidApiKey
from tenants.schemas import Role

SESSION_COOKIE = "flowbill_session"
# Before signing in there is no session: the sign-in form's CSRF token is a cookie of its own
# that the form must echo (double submit).
SIGN_IN_CSRF_COOKIE = "flowbill_sign_in_csrf"
LINK_VALIDITY = timedelta(minutes=15)
# Who may sign in to the page: drivers, who are also the IoT card holders.
PAGE_ROLES = (Role.DRIVER,)


class SignInRefused(FlowbillError):
    status = 401
    type_ = "sign-in-refused"
    title = "Sign-in refused"


class CsrfMismatch(FlowbillError):
    status = 403
    type_ = "csrf"
    title = "The form has expired"


@dataclass(frozen=True, slots=True)
class WebSession:
    """A signed-in browser: its tenant and the CSRF token its forms carry."""

    tenant_id: UUID
    name: str
    role: Role
    csrf_token: str
    expires_at: datetime


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def new_token() -> str:
    return secrets.token_urlsafe(32)


async def _open(conn: Connection, tenant_id: UUID, *, lifetime: timedelta, now: datetime) -> str:
    await repository.delete_expired(conn, before=now - timedelta(days=1))
    token = new_token()
    await repository.insert_session(
        conn, token_hash=_digest(token), tenant_id=tenant_id, csrf_token=new_token(),
        expires_at=now + lifetime,
    )  # fmt: skip
    return token


async def sign_in_with_key(
    conn: Connection, api_key: str, *, lifetime: timedelta, now: datetime
) -> str:
    """Open a session for the tenant of an API key; returns the session token."""
    try:
        caller = await tenants.authenticate(conn, api_key.strip(), now=now)
    except InvalidApiKey as exc:
        raise SignInRefused("this API key is not valid") from exc
    if caller.role not in PAGE_ROLES:
        raise SignInRefused("this page is for drivers and card holders")
    return await _open(conn, caller.tenant_id, lifetime=lifetime, now=now)


async def create_link(conn: Connection, *, tenant_id: UUID, now: datetime) -> tuple[str, datetime]:
    """A one-time sign-in token for a tenant, valid 15 minutes; returns it and its expiry."""
    token = new_token()
    expires_at = now + LINK_VALIDITY
    await repository.insert_link(
        conn, token_hash=_digest(token), tenant_id=tenant_id, expires_at=expires_at
    )
    return token, expires_at


def link_url(base_url: str, token: str) -> str:
    """The page's address that signs in with a one-time token."""
    return f"{base_url.rstrip('/')}/sign-in/link?token={token}"


async def sign_in_with_link(
    conn: Connection, token: str, *, lifetime: timedelta, now: datetime
) -> str:
    """Use a one-time token (once) to open a session; returns the session token."""
    tenant_id = await repository.use_link(conn, token_hash=_digest(token), now=now)
    if tenant_id is None:
        raise SignInRefused("this sign-in link was used already, has expired or is not valid")
    return await _open(conn, tenant_id, lifetime=lifetime, now=now)


async def find(conn: Connection, token: str | None, *, now: datetime) -> WebSession | None:
    """The live session of a cookie's token, if any."""
    if not token or len(token) > 100:
        return None
    row = await repository.live_session(conn, token_hash=_digest(token), now=now)
    if row is None or row.role not in {r.value for r in PAGE_ROLES}:
        return None
    return WebSession(row.tenant_id, row.name, Role(row.role), row.csrf_token, row.expires_at)


async def sign_out(conn: Connection, token: str | None, *, now: datetime) -> None:
    """End the cookie's session (nothing happens for an unknown token)."""
    if token and len(token) <= 100:
        await repository.end_session(conn, token_hash=_digest(token), now=now)


def check_csrf(expected: str | None, posted: str | None) -> None:
    """Refuse a form whose CSRF token is not the session's (or the sign-in cookie's)."""
    if not expected or not posted or not hmac.compare_digest(expected, posted):
        raise CsrfMismatch("reload the page and send the form again")
