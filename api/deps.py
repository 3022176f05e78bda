"""Request dependencies: the settings, the transaction, the authenticated caller."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Annotated, Any

import psycopg
from fastapi import Depends, Header, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from api.broker import BrokerLink
from api.limits import RateLimiter
from devices import service as devices
from devices.ca import DeviceCa
from flowbill import metrics
from flowbill.db import Connection
from flowbill.errors import Unavailable
from flowbill.periods import Calendar
from flowbill.settings import Settings
from iot_cards.gateways import HttpIotGateways
from tenants import service as tenants
from tenants.errors import InvalidApiKey, MalformedApiKey, RecentlyRefusedApiKey, RoleNotAllowed
from tenants.schemas import Role
from tenants.service import Caller
from wallet import exchange
from wallet.gateways import HttpGateways

log = logging.getLogger(__name__)


async def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def _pool(request: Request) -> AsyncConnectionPool[Connection]:
    pool: AsyncConnectionPool[Connection] = request.app.state.pool
    return pool


async def _broker(request: Request) -> BrokerLink:
    broker: BrokerLink = request.app.state.broker
    return broker


_bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer fbk_…`")


Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def _api_key(credentials: HTTPAuthorizationCredentials | None) -> str:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise InvalidApiKey("send the API key as `Authorization: Bearer <key>`")
    return credentials.credentials


def _takes_api_key(route: object) -> bool:
    # Whether the route authenticates its caller by API key: read once from its dependencies
    # and kept on the route.
    found: bool | None = getattr(route, "_flowbill_takes_api_key", None)
    if found is None:
        pending = list(getattr(getattr(route, "dependant", None), "dependencies", ()))
        found = False
        while pending and not found:
            dependant = pending.pop()
            found = dependant.call in (_caller, _caller_without_transaction)
            pending.extend(dependant.dependencies)
        route._flowbill_takes_api_key = found  # type: ignore[attr-defined]
    return found


def _rate_limit(request: Request, caller: Caller) -> None:
    limiter: RateLimiter = request.app.state.rate_limiter
    limiter.admit(key_id=caller.key_id, role=caller.role.value)


async def _key_gate(request: Request, credentials: Credentials) -> Caller | None:
    # Runs before any connection is taken (the transaction depends on it), for routes that
    # authenticate by API key: a missing, malformed or lately refused key is answered 401,
    # a key verified lately is rate-limited here, without the database. None: the database
    # must tell (or the route takes no key).
    route = request.scope.get("route")
    if route is None or not _takes_api_key(route):
        return None
    try:
        caller = tenants.screen_key(_api_key(credentials))
    except MalformedApiKey:
        metrics.HTTP_REQUESTS_REFUSED.labels("malformed_key", "").inc()
        raise
    except RecentlyRefusedApiKey:
        metrics.HTTP_REQUESTS_REFUSED.labels("refused_key", "").inc()
        raise
    if caller is not None:
        _rate_limit(request, caller)
    return caller


KeyGate = Annotated[Caller | None, Depends(_key_gate)]


async def _transaction(
    pool: Annotated[AsyncConnectionPool[Connection], Depends(_pool)], _: KeyGate
) -> AsyncIterator[Connection]:
    # The request owns the transaction: committed when the endpoint returns, rolled back
    # when it raises. Services never commit.
    try:
        conn = await pool.getconn(timeout=5.0)
    except PoolTimeout as exc:
        raise Unavailable("the database is not reachable") from exc
    try:
        async with conn.transaction():
            yield conn
    finally:
        await pool.putconn(conn)


@asynccontextmanager
async def _pooled(pool: AsyncConnectionPool[Connection]) -> AsyncIterator[Connection]:
    try:
        conn = await pool.getconn(timeout=5.0)
    except PoolTimeout as exc:
        raise Unavailable("the database is not reachable") from exc
    try:
        yield conn
    finally:
        await pool.putconn(conn)


@asynccontextmanager
async def statement_connection(pool: AsyncConnectionPool[Connection]) -> AsyncIterator[Connection]:
    """A pooled connection in autocommit mode, for a command that is one SQL statement (such
    as wallet_place_order): the statement is its own transaction, committed before its result
    comes back, so the answer follows the commit as with ConnDep, one round trip instead of
    three. Take it in the endpoint's body, after the dependencies (a caller check may need a
    connection of its own), and use DriverCallerWithoutTransaction rather than ConnDep."""
    async with _pooled(pool) as conn:
        await conn.set_autocommit(True)
        try:
            yield conn
        finally:
            try:
                await conn.set_autocommit(False)
            except psycopg.Error:
                # Still busy (its statement was interrupted) or broken: never reused.
                await conn.close()


async def _gateways(request: Request) -> HttpGateways:
    gateways: HttpGateways = request.app.state.gateways
    return gateways


SettingsDep = Annotated[Settings, Depends(_settings)]


async def _calendar(settings: SettingsDep) -> Calendar:
    return Calendar.from_settings(settings)


# The billing calendar (FLOWBILL_BILLING_TIME_ZONE and the closing window) of this API.
CalendarDep = Annotated[Calendar, Depends(_calendar)]
GatewaysDep = Annotated[HttpGateways, Depends(_gateways)]
PoolDep = Annotated[AsyncConnectionPool[Connection], Depends(_pool)]
BrokerDep = Annotated[BrokerLink, Depends(_broker)]
# scope="function": the transaction is committed before the response is sent, so a client
# that was told "done" can rely on it (FastAPI's default would commit after sending).
ConnDep = Annotated[Connection, Depends(_transaction, scope="function")]

# Where the IoT parties post their late answers (api/routers/callbacks/iot_cards.py).
PAYMENTS_PATH = "/v1/iot-callbacks/payments"
IDENTITY_PATH = "/v1/iot-callbacks/identity-checks"


async def _iot_gateways(request: Request, settings: SettingsDep) -> HttpIotGateways:
    # One client per API process, made on first use (the app's lifespan belongs to api/app.py).
    gateways: HttpIotGateways | None = getattr(request.app.state, "iot_gateways", None)
    if gateways is None or gateways.base_url != settings.iot_gateway_url:
        gateways = HttpIotGateways(
            settings.iot_gateway_url, timeout_seconds=settings.gateway_timeout_seconds
        )
        request.app.state.iot_gateways = gateways
    return gateways


IotGatewaysDep = Annotated[HttpIotGateways, Depends(_iot_gateways)]


def iot_callback_url(settings: Settings, path: str) -> str | None:
    """Where a party posts its late answer, when this API is reachable to it."""
    return f"{settings.public_url.rstrip('/')}{path}" if settings.public_url else None


async def _caller(
    request: Request, screened: KeyGate, conn: ConnDep, credentials: Credentials
) -> Caller:
    if screened is not None:
        return screened
    caller = await tenants.authenticate(conn, _api_key(credentials))
    _rate_limit(request, caller)
    return caller


async def _caller_without_transaction(
    request: Request, screened: KeyGate, pool: PoolDep, credentials: Credentials
) -> Caller:
    # For commands that are one SQL statement (statement_connection): a key verified lately
    # needs no database; another is checked by its own statements (a read, and at most once a
    # minute a touch of last_used_at: neither needs the other's transaction), over before the
    # endpoint takes its connection, so a request never holds two at once.
    if screened is not None:
        return screened
    async with statement_connection(pool) as conn:
        caller = await tenants.authenticate(conn, _api_key(credentials))
    _rate_limit(request, caller)
    return caller


CurrentCaller = Annotated[Caller, Depends(_caller)]


def _admit(caller: Caller, roles: tuple[Role, ...]) -> Caller:
    if caller.role not in roles:
        allowed = ", ".join(r.value for r in roles)
        raise RoleNotAllowed(f"this endpoint is for: {allowed}")
    return caller


def admitted_roles(dependency: object) -> tuple[Role, ...] | None:
    """The roles a caller dependency admits, or None for a dependency that is no role check
    (the route table is read this way by the role sweep of the security tests)."""
    roles: tuple[Role, ...] | None = getattr(dependency, "admitted_roles", None)
    return roles


def require_role(*roles: Role) -> Callable[[Caller], Coroutine[Any, Any, Caller]]:
    """A dependency that admits only callers of the given roles."""

    async def check(caller: CurrentCaller) -> Caller:
        return _admit(caller, roles)

    check.admitted_roles = roles  # type: ignore[attr-defined]
    return check


async def _driver_without_transaction(
    caller: Annotated[Caller, Depends(_caller_without_transaction)],
) -> Caller:
    return _admit(caller, (Role.DRIVER,))


_driver_without_transaction.admitted_roles = (Role.DRIVER,)  # type: ignore[attr-defined]


OperatorCaller = Annotated[Caller, Depends(require_role(Role.OPERATOR))]
MerchantCaller = Annotated[Caller, Depends(require_role(Role.MERCHANT))]
PartnerCaller = Annotated[Caller, Depends(require_role(Role.PARTNER))]
AppCaller = Annotated[Caller, Depends(require_role(Role.APP))]
DriverCaller = Annotated[Caller, Depends(require_role(Role.DRIVER))]
SponsorCaller = Annotated[Caller, Depends(require_role(Role.SPONSOR))]
# A driver, for an endpoint that opens no request transaction: its command is one SQL
# statement on statement_connection (the redemption, for its throughput).
DriverCallerWithoutTransaction = Annotated[Caller, Depends(_driver_without_transaction)]

IdempotencyKey = Annotated[
    str,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=100,
        pattern=r"^[A-Za-z0-9._:-]+$",
        description="Unique per command: a repeat returns the first result and moves nothing.",
    ),
]


def ledger_key(caller: Caller, command: str, key: str) -> str:
    """The ledger's key for a caller's Idempotency-Key: keys of different tenants never meet."""
    return f"{caller.tenant_id}:{command}:{key}"


def callback_url(settings: Settings) -> str | None:
    """Where the gateways post their late answers, when this API is reachable to them."""
    return (
        f"{settings.public_url.rstrip('/')}/v1/gateway-callbacks" if settings.public_url else None
    )


def providers(settings: Settings, gateways: HttpGateways) -> exchange.Providers:
    return exchange.Providers(
        payments=gateways, fulfilment=gateways, callback_url=callback_url(settings)
    )


async def after_response(work: Coroutine[Any, Any, object], *, what: str) -> None:
    """Run work after the response (and so after the commit); failures are logged, and the
    reconciliation settles whatever they left open."""
    try:
        await work
    except Exception:
        log.exception("background work failed", extra={"work": what})


async def _device_issuer(request: Request, settings: SettingsDep) -> devices.Issuer:
    # The CA is read from its store once per process, on first use.
    issuer: devices.Issuer | None = getattr(request.app.state, "device_issuer", None)
    if issuer is None:
        ca = DeviceCa.load(settings.device_ca_dir) if settings.device_ca_dir else None
        issuer = devices.Issuer(
            ca=ca,
            certificate_days=settings.device_certificate_days,
            rotation_overlap=timedelta(hours=settings.device_rotation_overlap_hours),
        )
        request.app.state.device_issuer = issuer
    return issuer


DeviceIssuerDep = Annotated[devices.Issuer, Depends(_device_issuer)]
