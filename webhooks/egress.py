"""Where webhooks may go: public addresses only, over https, to the very address checked.

A tenant chooses the URL, so a webhook is a request we send on a stranger's behalf. Without
care it reaches what only we can reach: the loopback interface (the API's `/metrics`), the
private network (the database, the broker), a cloud's metadata service (169.254.169.254).

The host is resolved when an endpoint is registered (to refuse early, with a reason) and
again at every send. The send-time check sits in the HTTP client's network backend: it
resolves the name, refuses if any address it got is not public, and opens the TCP connection
to an address it just checked, so that no second lookup (DNS rebinding) can slip a private
address in between. TLS is still negotiated for the host name (SNI and the certificate
check), and the `Host` header still names it: only the TCP destination is pinned.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import httpcore
import httpx

from flowbill.settings import Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# Answers the addresses a host name resolves to, for a TCP connection to `port`; raises
# HostNotFound when it has none. Tests pass their own; production uses the system's.
Resolver = Callable[[str, int], Awaitable[list[IPAddress]]]

RESOLVE_TIMEOUT_SECONDS = 5.0

_V4 = ipaddress.IPv4Network
_V6 = ipaddress.IPv6Network

# Every range a webhook may never reach, with the reason a tenant is shown. An address must
# also be `is_global` by Python's reckoning, a second net for ranges added after this list.
_REFUSED_V4: tuple[tuple[_V4, str], ...] = (
    (_V4("0.0.0.0/8"), "unspecified ('this network')"),
    (_V4("10.0.0.0/8"), "private (RFC 1918)"),
    (_V4("100.64.0.0/10"), "shared address space (carrier-grade NAT, RFC 6598)"),
    (_V4("127.0.0.0/8"), "loopback"),
    (_V4("169.254.0.0/16"), "link-local (where cloud metadata services answer)"),
    (_V4("172.16.0.0/12"), "private (RFC 1918)"),
    (_V4("192.0.0.0/24"), "reserved for protocol assignments"),
    (_V4("192.0.2.0/24"), "reserved for documentation"),
    (_V4("192.88.99.0/24"), "the deprecated 6to4 relay anycast range"),
    (_V4("192.168.0.0/16"), "private (RFC 1918)"),
    (_V4("198.18.0.0/15"), "reserved for benchmarking"),
    (_V4("198.51.100.0/24"), "reserved for documentation"),
    (_V4("203.0.113.0/24"), "reserved for documentation"),
    (_V4("224.0.0.0/4"), "multicast"),
    (_V4("240.0.0.0/4"), "reserved (or broadcast)"),
)
_REFUSED_V6: tuple[tuple[_V6, str], ...] = (
    (_V6("::/128"), "unspecified"),
    (_V6("::1/128"), "loopback"),
    (_V6("::/96"), "an IPv4-compatible address (deprecated)"),
    (_V6("64:ff9b:1::/48"), "a local-use NAT64 prefix"),
    (_V6("100::/64"), "reserved for discarding"),
    (_V6("2001::/23"), "reserved for protocol assignments (incl. Teredo)"),
    (_V6("2001:db8::/32"), "reserved for documentation"),
    (_V6("fc00::/7"), "unique local (private)"),
    (_V6("fe80::/10"), "link-local"),
    (_V6("fec0::/10"), "site-local (deprecated)"),
    (_V6("ff00::/8"), "multicast"),
)
# IPv6 forms that carry an IPv4 address, which is checked in their stead.
_NAT64 = _V6("64:ff9b::/96")


class EgressRefused(Exception):
    """The destination is not one a webhook may be sent to; the message says why."""


class HostNotFound(Exception):
    """The host name resolves to no address (now)."""


def refusal(ip: IPAddress) -> str | None:
    """Why a webhook may not be sent to this address; None if it may."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            why = refusal(embedded)
            return None if why is None else f"an IPv6 form of {embedded}, which is {why}"
        for network, why in _REFUSED_V6:
            if ip in network:
                return why
    else:
        for v4_network, why in _REFUSED_V4:
            if ip in v4_network:
                return why
    if not ip.is_global:
        return "not a public address"
    return None


async def system_resolver(host: str, port: int) -> list[IPAddress]:
    """The addresses the system's resolver gives for `host`, in its order of preference."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(RESOLVE_TIMEOUT_SECONDS):
            found = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, TimeoutError) as exc:
        raise HostNotFound(f"{host} does not resolve") from exc
    addresses: list[IPAddress] = []
    for *_, sockaddr in found:
        # An IPv6 link-local answer may carry a zone ("fe80::1%eth0"); the address is enough.
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise HostNotFound(f"{host} does not resolve")
    return addresses


@dataclass(frozen=True, slots=True)
class EgressPolicy:
    """What the sender may reach: https and public addresses, unless development says
    otherwise; names are resolved by `resolver`."""

    resolver: Resolver
    allow_http: bool = False
    allow_private: bool = False

    @classmethod
    def from_settings(cls, settings: Settings, *, resolver: Resolver | None = None) -> EgressPolicy:
        return cls(
            # Looked up at each call, so that tests can put their own resolver in its place.
            resolver=resolver or system_resolver,
            allow_http=settings.webhook_allow_http,
            allow_private=settings.webhook_allow_private,
        )

    def check_scheme(self, scheme: str) -> None:
        """Raises EgressRefused unless webhooks may be sent with this URL scheme."""
        if scheme == "https" or (scheme == "http" and self.allow_http):
            return
        raise EgressRefused("webhooks are sent over https only")

    def check_address(self, ip: IPAddress) -> None:
        """Raises EgressRefused unless webhooks may be sent to this address."""
        why = None if self.allow_private else refusal(ip)
        if why is not None:
            raise EgressRefused(f"{ip} is {why}")

    async def addresses(self, host: str, port: int) -> list[IPAddress]:
        """Every address `host` stands for, each one checked: one bad address refuses all,
        since we cannot tell which one a connection would take. Raises EgressRefused or
        HostNotFound."""
        try:
            literal: IPAddress | None = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            literal = None
        found = [literal] if literal is not None else await self.resolver(host, port)
        if not found:
            raise HostNotFound(f"{host} does not resolve")
        for ip in found:
            try:
                self.check_address(ip)
            except EgressRefused as refused:
                if literal is not None:
                    raise
                raise EgressRefused(f"{host} resolves to {refused}") from None
        return found


class _CheckedBackend(httpcore.AsyncNetworkBackend):
    """Resolves and checks at connect time, then connects to an address it checked."""

    def __init__(self, policy: EgressPolicy) -> None:
        self._policy = policy
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's signature)
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        checked = await self._policy.addresses(host, port)
        failure: httpcore.ConnectError | httpcore.ConnectTimeout | None = None
        for ip in checked:
            try:
                return await self._inner.connect_tcp(
                    str(ip), port, timeout=timeout, local_address=local_address,
                    socket_options=socket_options,
                )  # fmt: skip
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None
        raise failure

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's signature)
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise EgressRefused("webhooks are never sent to a local socket")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


# httpcore's errors as httpx's, as httpx's own transport maps them.
_HTTPX_ERRORS: tuple[tuple[type[Exception], type[httpx.TransportError]], ...] = (
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
    (httpcore.ProtocolError, httpx.ProtocolError),
    (httpcore.NetworkError, httpx.NetworkError),
    (httpcore.TimeoutException, httpx.TimeoutException),
)


def _as_httpx(exc: Exception) -> Exception:
    for core, mapped in _HTTPX_ERRORS:
        if isinstance(exc, core):
            return mapped(str(exc))
    return exc


class _Body(httpx.AsyncByteStream):
    def __init__(self, stream: Any) -> None:
        self._stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._stream:
                yield chunk
        except Exception as exc:
            mapped = _as_httpx(exc)
            if mapped is exc:
                raise
            raise mapped from exc

    async def aclose(self) -> None:
        await self._stream.aclose()


class EgressTransport(httpx.AsyncBaseTransport):
    """An httpx transport that sends only where the policy allows (see the module's doc)."""

    def __init__(
        self, policy: EgressPolicy, *, max_connections: int, ssl_context: ssl.SSLContext
    ) -> None:
        self._policy = policy
        # No keep-alive: each send opens its own connection, so each send resolves and checks
        # the host again, and no connection is shared between two tenants' endpoints.
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context, max_connections=max_connections,
            max_keepalive_connections=0, network_backend=_CheckedBackend(policy),
        )  # fmt: skip

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self._policy.check_scheme(request.url.scheme)
        assert isinstance(request.stream, httpx.AsyncByteStream)
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        try:
            answer = await self._pool.handle_async_request(core_request)
        except Exception as exc:
            mapped = _as_httpx(exc)
            if mapped is exc:
                raise
            raise mapped from exc
        return httpx.Response(
            status_code=answer.status, headers=answer.headers, stream=_Body(answer.stream),
            extensions=answer.extensions,
        )  # fmt: skip

    async def aclose(self) -> None:
        await self._pool.aclose()


def client(
    policy: EgressPolicy,
    *,
    timeout_seconds: float,
    max_connections: int,
    ssl_context: ssl.SSLContext | None = None,
) -> httpx.AsyncClient:
    """The sender's HTTP client: never follows a redirect (a 3xx is the receiver's answer),
    ignores proxy variables (a proxy would connect where we did not check)."""
    return httpx.AsyncClient(
        transport=EgressTransport(
            policy,
            max_connections=max_connections,
            ssl_context=ssl_context or httpx.create_ssl_context(),
        ),
        timeout=timeout_seconds,
        follow_redirects=False,
        trust_env=False,
    )
