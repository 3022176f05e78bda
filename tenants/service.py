"""Tenants and API keys: issue, verify, rotate, revoke.

A key is `fbk_<key id>_<secret>`. Only the SHA-256 of the 256-bit secret is stored: the
secret is random, so a fast hash is as strong as a slow one and keeps each request cheap.

A verified key is remembered by each API process for KEY_CACHE_SECONDS, so that most requests
need no database read to know their caller. So a key revoked, or a tenant disabled, stops
working within KEY_CACHE_SECONDS in every process; in the process that revoked or disabled it,
usually at once (its entries are dropped then, but a request racing with that transaction may
still remember the key for KEY_CACHE_SECONDS).

A key refused by the database is remembered too, for REFUSED_CACHE_SECONDS (`screen_key`): a
client that repeats a wrong key costs no database work, nor does a malformed one.

What a key opened besides requests (the driver page's browser sessions) ends with it: the
layers above register a hook (`when_keys_stop`) that runs in the transaction that revokes the
key or disables the tenant.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID

from flowbill import paging
from flowbill.db import Connection
from flowbill.paging import Page
from tenants import repository
from tenants.errors import (
    ApiKeyNotFound,
    InvalidApiKey,
    MalformedApiKey,
    RecentlyRefusedApiKey,
    TenantNotFound,
)
from tenants.schemas import (
    ApiKeyIssued,
    ApiKeyPublic,
    Role,
    TenantCreated,
    TenantPublic,
)

_KEY_PREFIX = "fbk"
_KEY_ID_ALPHABET = string.ascii_lowercase + string.digits
# last_used_at is written at most this often per key, not on every request.
_TOUCH_EVERY = timedelta(minutes=1)
KEY_CACHE_SECONDS = 5.0
KEY_CACHE_ENTRIES = 10_000
REFUSED_CACHE_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class Caller:
    """The authenticated tenant behind a request."""

    tenant_id: UUID
    name: str
    role: Role
    key_id: str


class VerifiedKeys:
    """Keys verified recently, by the SHA-256 of the whole key: a bounded LRU whose entries
    expire `ttl_seconds` after their verification. Failures are never remembered."""

    def __init__(
        self, *, ttl_seconds: float, max_entries: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl_seconds = ttl_seconds
        self.max_entries = max_entries
        self.clock = clock
        self._entries: OrderedDict[bytes, tuple[float, Caller]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, digest: bytes) -> Caller | None:
        found = self._entries.get(digest)
        if found is None:
            return None
        verified_at, caller = found
        if self.clock() - verified_at >= self.ttl_seconds:
            del self._entries[digest]
            return None
        self._entries.move_to_end(digest)
        return caller

    def put(self, digest: bytes, caller: Caller) -> None:
        self._entries[digest] = (self.clock(), caller)
        self._entries.move_to_end(digest)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def forget(self, *, tenant_id: UUID, key_id: str | None = None) -> None:
        """Drop the tenant's keys (or one of them) at once, e.g. when revoked or disabled."""
        for digest, (_, caller) in list(self._entries.items()):
            if caller.tenant_id == tenant_id and key_id in (None, caller.key_id):
                del self._entries[digest]

    def clear(self) -> None:
        self._entries.clear()


class RefusedKeys:
    """Keys the database refused recently, by the SHA-256 of the whole key: a bounded LRU
    whose entries expire `ttl_seconds` after the refusal."""

    def __init__(
        self, *, ttl_seconds: float, max_entries: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl_seconds = ttl_seconds
        self.max_entries = max_entries
        self.clock = clock
        self._entries: OrderedDict[bytes, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, digest: object) -> bool:
        refused_at = self._entries.get(digest)  # type: ignore[call-overload]
        if refused_at is None:
            return False
        if self.clock() - refused_at >= self.ttl_seconds:
            del self._entries[digest]  # type: ignore[arg-type]
            return False
        return True

    def add(self, digest: bytes) -> None:
        self._entries[digest] = self.clock()
        self._entries.move_to_end(digest)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()


VERIFIED_KEYS = VerifiedKeys(ttl_seconds=KEY_CACHE_SECONDS, max_entries=KEY_CACHE_ENTRIES)
REFUSED_KEYS = RefusedKeys(ttl_seconds=REFUSED_CACHE_SECONDS, max_entries=KEY_CACHE_ENTRIES)

# hook(conn, tenant_id, key_id): one key was revoked, or (key_id None) the tenant disabled.
KeysStopped = Callable[[Connection, UUID, str | None], Awaitable[None]]
_WHEN_KEYS_STOP: list[KeysStopped] = []


def when_keys_stop(hook: KeysStopped) -> None:
    """Have hook run, in the same transaction, whenever a key is revoked or a tenant disabled
    (how the layers above, which this domain may not import, end what a key opened)."""
    if hook not in _WHEN_KEYS_STOP:
        _WHEN_KEYS_STOP.append(hook)


async def _keys_stopped(conn: Connection, tenant_id: UUID, key_id: str | None) -> None:
    for hook in _WHEN_KEYS_STOP:
        await hook(conn, tenant_id, key_id)


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


async def issue_key(conn: Connection, *, tenant_id: UUID, label: str) -> ApiKeyIssued:
    """A new key for the tenant; the secret is in the answer and nowhere else."""
    if await repository.get_tenant(conn, tenant_id) is None:
        raise TenantNotFound(f"no tenant {tenant_id}")
    key_id = "".join(secrets.choice(_KEY_ID_ALPHABET) for _ in range(16))
    secret = secrets.token_urlsafe(32)
    row = await repository.insert_key(
        conn, key_id=key_id, tenant_id=tenant_id, secret_sha256=_digest(secret), label=label
    )
    return ApiKeyIssued.model_validate(
        {**asdict(row), "api_key": f"{_KEY_PREFIX}_{key_id}_{secret}"}
    )


async def create_tenant(
    conn: Connection, *, name: str, role: Role, key_label: str
) -> TenantCreated:
    """A tenant with its first API key."""
    tenant = await repository.insert_tenant(conn, name=name, role=role.value)
    key = await issue_key(conn, tenant_id=tenant.tenant_id, label=key_label)
    return TenantCreated(tenant=TenantPublic.model_validate(tenant), key=key)


async def get_tenant(conn: Connection, tenant_id: UUID) -> TenantPublic:
    """One tenant."""
    row = await repository.get_tenant(conn, tenant_id)
    if row is None:
        raise TenantNotFound(f"no tenant {tenant_id}")
    return TenantPublic.model_validate(row)


async def list_tenants(
    conn: Connection, *, role: Role | None, limit: int, cursor: str | None
) -> Page[TenantPublic]:
    """Tenants (of a role, if given), oldest first, a page at a time."""
    after = paging.decode_cursor(cursor, (datetime, UUID), scope="tenants") if cursor else None
    rows = await repository.list_tenants(
        conn, role=role.value if role else None, after=after, limit=limit + 1
    )
    return paging.page(
        [TenantPublic.model_validate(r) for r in rows],
        limit=limit, key=lambda t: (t.created_at, t.tenant_id), scope="tenants",
    )  # fmt: skip


async def set_disabled(conn: Connection, tenant_id: UUID, *, disabled: bool) -> TenantPublic:
    """Disable a tenant (all its keys stop working) or enable it again."""
    row = await repository.set_tenant_disabled(conn, tenant_id, disabled=disabled)
    if row is None:
        raise TenantNotFound(f"no tenant {tenant_id}")
    if disabled:
        await _keys_stopped(conn, tenant_id, None)
        VERIFIED_KEYS.forget(tenant_id=tenant_id)
    else:
        # Its keys were refused while it was disabled; they work again at once here.
        REFUSED_KEYS.clear()
    return TenantPublic.model_validate(row)


async def list_keys(
    conn: Connection, tenant_id: UUID, *, limit: int, cursor: str | None
) -> Page[ApiKeyPublic]:
    """A tenant's keys, without their secrets, oldest first, a page at a time."""
    after = paging.decode_cursor(cursor, (datetime, str), scope="api-keys") if cursor else None
    rows = await repository.list_keys(conn, tenant_id, after=after, limit=limit + 1)
    return paging.page(
        [ApiKeyPublic.model_validate(r) for r in rows],
        limit=limit, key=lambda k: (k.created_at, k.key_id), scope="api-keys",
    )  # fmt: skip


async def revoke_key(conn: Connection, *, tenant_id: UUID, key_id: str) -> ApiKeyPublic:
    """Revoke one key; the tenant's other keys keep working."""
    row = await repository.revoke_key(conn, tenant_id=tenant_id, key_id=key_id)
    if row is None:
        raise ApiKeyNotFound(f"no key {key_id!r} for this tenant")
    await _keys_stopped(conn, tenant_id, key_id)
    VERIFIED_KEYS.forget(tenant_id=tenant_id, key_id=key_id)
    return ApiKeyPublic.model_validate(row)


def _split_key(api_key: str) -> tuple[str, str] | None:
    prefix, _, rest = api_key.partition("_")
    key_id, _, secret = rest.partition("_")
    if prefix != _KEY_PREFIX or len(key_id) != 16 or not secret or len(secret) > 128:
        return None
    if not all(c in _KEY_ID_ALPHABET for c in key_id):
        return None
    return key_id, secret


async def authenticate(conn: Connection, api_key: str, *, now: datetime | None = None) -> Caller:
    """The caller a key belongs to, or InvalidApiKey (the same error for every failure).

    A key verified within KEY_CACHE_SECONDS is answered from memory (VERIFIED_KEYS).
    """
    caller = screen_key(api_key)
    if caller is not None:
        return caller
    parts = _split_key(api_key)
    assert parts is not None  # screen_key refused a malformed key
    key_id, secret = parts
    owner = await repository.find_active_key(conn, key_id)
    if owner is None or not hmac.compare_digest(owner.secret_sha256, _digest(secret)):
        REFUSED_KEYS.add(_remembered_as(api_key))
        raise InvalidApiKey(_REFUSED)
    now = now or datetime.now(UTC)
    if owner.last_used_at is None or now - owner.last_used_at > _TOUCH_EVERY:
        await repository.touch_key(conn, key_id, every=_TOUCH_EVERY)
    caller = Caller(
        tenant_id=owner.tenant_id, name=owner.name, role=Role(owner.role), key_id=key_id
    )
    VERIFIED_KEYS.put(_remembered_as(api_key), caller)
    return caller


def _remembered_as(api_key: str) -> bytes:
    return hashlib.sha256(api_key.encode()).digest()


_REFUSED = "the API key is unknown, revoked, or its tenant is disabled"


def screen_key(api_key: str) -> Caller | None:
    """What can be known of a key without the database: its caller when it was verified within
    KEY_CACHE_SECONDS; InvalidApiKey when it is malformed or was refused within
    REFUSED_CACHE_SECONDS; None when only the database can tell."""
    remembered_as = _remembered_as(api_key)
    caller = VERIFIED_KEYS.get(remembered_as)
    if caller is not None:
        return caller
    if _split_key(api_key) is None:
        raise MalformedApiKey("the API key is malformed")
    if remembered_as in REFUSED_KEYS:
        raise RecentlyRefusedApiKey(_REFUSED)
    return None


def remembered_caller(api_key: str) -> Caller | None:
    """The caller of a key verified within KEY_CACHE_SECONDS in this process, if any."""
    return VERIFIED_KEYS.get(_remembered_as(api_key))


async def has_role(conn: Connection, tenant_id: UUID, role: Role) -> bool:
    """Whether the tenant exists, is enabled and has the role (how other domains ask)."""
    row = await repository.get_tenant(conn, tenant_id)
    return row is not None and row.role == role.value and row.disabled_at is None
