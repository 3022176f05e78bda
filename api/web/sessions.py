"""Browser sessions of the driver page: signing in (with an API key or a one-time link),
the session behind a cookie, CSRF tokens, signing out (here or everywhere).

A session token is 32 random bytes in an HttpOnly cookie; the database keeps only its
SHA-256, so neither a leaked table nor a log line can sign anyone in. Each session has its
own CSRF token, which every form posts back and `check_csrf` compares in constant time.

A session belongs to the API key that opened it (pasted into the form, or the key that asked
for the one-time link). Every request checks the key and the tenant in the database, with no
cache: a key revoked or a tenant disabled by any process ends its sessions at the next request.
Revoking and disabling also mark the sessions ended (`_keys_stopped`), so enabling the tenant
again brings none back.

A one-time link is consumed only by a POST carrying the sign-in form's CSRF token: a GET (a
link scanner, a preview) shows the "Sign in" button and consumes nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID

from api.web import repository
from flowbill.db import Connection
from flowbill.errors import FlowbillError
from tenants import service as tenants
from tenants.errors import InvalidApiKey
from tenants.schemas import Role
from tenants.service import Caller

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


class SignInLinkExpired(FlowbillError):
    status = 410
    type_ = "sign-in-link-expired"
    title = "This sign-in link can no longer be used"


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


async def _open(
    conn: Connection, tenant_id: UUID, key_id: str, *, lifetime: timedelta, now: datetime
) -> str:
    await repository.delete_expired(conn, before=now - timedelta(days=1))
    token = new_token()
    opened = await repository.insert_session(
        conn, token_hash=_digest(token), tenant_id=tenant_id, key_id=key_id,
        csrf_token=new_token(), expires_at=now + lifetime,
    )  # fmt: skip
    if not opened:
        # Revoked in another process, which this one's key cache has not heard of yet.
        raise SignInRefused("this API key is not valid")
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
    return await _open(conn, caller.tenant_id, caller.key_id, lifetime=lifetime, now=now)


async def create_link(conn: Connection, *, caller: Caller, now: datetime) -> tuple[str, datetime]:
    """A one-time sign-in token for the caller's tenant, valid 15 minutes and while the
    caller's key is; returns it and its expiry."""
    token = new_token()
    expires_at = now + LINK_VALIDITY
    made = await repository.insert_link(
        conn, token_hash=_digest(token), tenant_id=caller.tenant_id, key_id=caller.key_id,
        expires_at=expires_at,
    )  # fmt: skip
    if not made:
        raise InvalidApiKey("the API key is unknown, revoked, or its tenant is disabled")
    return token, expires_at


def link_url(base_url: str, token: str) -> str:
    """The page's address that signs in with a one-time token."""
    return f"{base_url.rstrip('/')}/sign-in/link?token={token}"


def _unusable(link: repository.LinkRow | None, *, now: datetime) -> FlowbillError:
    """Why a link cannot sign in."""
    if link is None:
        return SignInRefused("this sign-in link is not valid")
    if link.used_at is not None:
        return SignInLinkExpired("this sign-in link was used already; ask the app for a new one")
    if link.expires_at <= now:
        return SignInLinkExpired("this sign-in link has expired; ask the app for a new one")
    return SignInLinkExpired("the key that asked for this sign-in link no longer works")


async def _find_link(conn: Connection, token: str) -> repository.LinkRow | None:
    if not token or len(token) > 100:
        return None
    return await repository.find_link(conn, token_hash=_digest(token))


async def check_link(conn: Connection, token: str, *, now: datetime) -> str:
    """The name of the tenant a one-time token would sign in, without consuming it."""
    link = await _find_link(conn, token)
    if link is None or link.used_at is not None or link.expires_at <= now or link.stopped:
        raise _unusable(link, now=now)
    return link.name


async def sign_in_with_link(
    conn: Connection, token: str, *, lifetime: timedelta, now: datetime
) -> str:
    """Use a one-time token (once) to open a session; returns the session token."""
    link = None
    if token and len(token) <= 100:
        link = await repository.use_link(conn, token_hash=_digest(token), now=now)
    if link is None:
        raise _unusable(await _find_link(conn, token), now=now)
    return await _open(conn, link.tenant_id, link.key_id, lifetime=lifetime, now=now)


async def find(conn: Connection, token: str | None, *, now: datetime) -> WebSession | None:
    """The live session of a cookie's token, if any (checked in the database every time: no
    cache, so a revocation holds at the next request)."""
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


async def sign_out_everywhere(conn: Connection, tenant_id: UUID, *, now: datetime) -> int:
    """End every session of the tenant and drop its unused sign-in links; returns how many
    sessions ended."""
    return await repository.end_sessions(conn, tenant_id=tenant_id, key_id=None, now=now)


async def _keys_stopped(conn: Connection, tenant_id: UUID, key_id: str | None) -> None:
    # A revoked key (or, key_id None, a disabled tenant) ends what it opened, for good.
    await repository.end_sessions(conn, tenant_id=tenant_id, key_id=key_id, now=datetime.now(UTC))


tenants.when_keys_stop(_keys_stopped)


def check_csrf(expected: str | None, posted: str | None) -> None:
    """Refuse a form whose CSRF token is not the session's (or the sign-in cookie's)."""
    if not expected or not posted or not hmac.compare_digest(expected, posted):
        raise CsrfMismatch("reload the page and send the form again")
