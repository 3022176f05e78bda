# The webhook fixtures are imported by name, and tests name them as parameters.
# ruff: noqa: F811
"""Webhook egress: a tenant's URL never makes the sender reach loopback, private, link-local or
other internal addresses, at registration or at any send (DNS rebinding included), and what
a refused target would have answered is never stored.

Names resolve through a resolver these tests control (`webhooks.egress.system_resolver` is
replaced), so no test depends on the machine's DNS. Every refusal is checked for its problem
type and for nothing having changed.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import ssl
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID

import httpx
import pytest
import uvicorn
from psycopg_pool import AsyncConnectionPool

from flowbill import db
from flowbill.settings import Settings
from tenants.schemas import Role
from tests.conftest import assert_problem, bearer, free_port, make_tenant
from tests.webhooks.conftest import (  # noqa: F401 (fixtures: own_queue, pool, receiver)
    Receiver,
    Reply,
    committed,
    emit,
    own_queue,
    pool,
    receiver,
    rows,
)
from webhooks import delivery, egress
from webhooks.egress import EgressPolicy, EgressRefused, IPAddress, refusal

pytestmark = pytest.mark.usefixtures("own_queue")

Pool = AsyncConnectionPool[db.Connection]
# A public address (nothing listens for us there: registration only resolves it).
PUBLIC = "93.184.215.14"


@dataclass
class Resolver:
    """DNS as these tests want it: each name answers its list of addresses, in turn (the
    last one repeats), and every lookup is counted."""

    answers: dict[str, list[list[str]]] = field(default_factory=dict)
    lookups: list[str] = field(default_factory=list)

    def answer(self, name: str, *addresses: list[str]) -> None:
        self.answers[name] = list(addresses)

    async def __call__(self, host: str, port: int) -> list[IPAddress]:
        self.lookups.append(host)
        turns = self.answers.get(host)
        if not turns:
            raise egress.HostNotFound(f"{host} does not resolve")
        found = turns.pop(0) if len(turns) > 1 else turns[0]
        return [ipaddress.ip_address(a) for a in found]


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> Resolver:
    """Our resolver in place of the system's, for the API and the sender alike."""
    resolver = Resolver()
    monkeypatch.setattr(egress, "system_resolver", resolver)
    return resolver


@pytest.fixture
def strict(settings: Settings) -> Settings:
    """The production policy (the session's settings already have it; this says so)."""
    assert not settings.webhook_allow_http
    assert not settings.webhook_allow_private
    return settings


async def sponsor(settings: Settings) -> tuple[UUID, dict[str, str]]:
    tenant_id, key = await make_tenant(settings, role=Role.SPONSOR)
    return UUID(tenant_id), bearer(key)


async def endpoints_of(pool: Pool, tenant_id: UUID) -> list[tuple[object, ...]]:
    return await rows(
        pool, "SELECT url FROM webhook_endpoints WHERE tenant_id = %s ORDER BY url", tenant_id
    )


# --- The rule, address by address -----------------------------------------------------------

REFUSED = [
    ("127.0.0.1", "loopback"),
    ("127.8.9.10", "loopback"),
    ("10.1.2.3", "RFC 1918"),
    ("172.16.0.9", "RFC 1918"),
    ("192.168.1.1", "RFC 1918"),
    ("100.64.0.1", "carrier-grade NAT"),
    ("100.100.100.200", "carrier-grade NAT"),
    ("169.254.169.254", "link-local"),
    ("0.0.0.0", "unspecified"),
    ("224.0.0.251", "multicast"),
    ("239.255.255.250", "multicast"),
    ("255.255.255.255", "reserved"),
    ("240.0.0.1", "reserved"),
    ("198.18.0.1", "benchmarking"),
    ("192.0.2.10", "documentation"),
    ("::1", "loopback"),
    ("::", "unspecified"),
    ("fd00::1", "unique local"),
    ("fc00::1", "unique local"),
    ("fe80::1", "link-local"),
    ("ff02::1", "multicast"),
    ("::ffff:127.0.0.1", "form of 127.0.0.1, which is loopback"),
    ("::ffff:169.254.169.254", "form of 169.254.169.254, which is link-local"),
    ("64:ff9b::a00:1", "form of 10.0.0.1, which is private"),
    ("64:ff9b::7f00:1", "form of 127.0.0.1, which is loopback"),
    ("2002:a9fe:a9fe::1", "form of 169.254.169.254"),
    ("::7f00:1", "IPv4-compatible"),
    ("2001:db8::1", "documentation"),
    ("2001::1", "Teredo"),
    ("fec0::1", "site-local"),
]


@pytest.mark.parametrize(("address", "why"), REFUSED)
def test_internal_addresses_are_refused_with_a_reason(address: str, why: str) -> None:
    reason = refusal(ipaddress.ip_address(address))
    assert reason is not None
    assert why in reason
    with pytest.raises(EgressRefused, match=re.escape(str(ipaddress.ip_address(address)))):
        EgressPolicy(resolver=egress.system_resolver).check_address(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    "address", [PUBLIC, "8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "64:ff9b::808:808"]
)
def test_public_addresses_are_taken(address: str) -> None:
    assert refusal(ipaddress.ip_address(address)) is None


async def test_one_bad_address_among_good_ones_refuses_the_name(dns: Resolver) -> None:
    dns.answer("mixed.example", [PUBLIC, "10.0.0.7"])
    policy = EgressPolicy.from_settings(Settings(database_url="postgresql://x@h/x"))  # type: ignore[arg-type]
    with pytest.raises(EgressRefused, match=r"mixed\.example resolves to 10\.0\.0\.7"):
        await policy.addresses("mixed.example", 443)


def test_the_development_switches_are_refused_in_production() -> None:
    for switch in ("webhook_allow_http", "webhook_allow_private"):
        with pytest.raises(ValueError, match="development only"):
            Settings(
                database_url="postgresql://x@h/x",  # type: ignore[arg-type]
                environment="production",
                mqtt_password="a-real-broker-password",  # type: ignore[arg-type]
                iot_id_hash_key="k" * 40,  # type: ignore[arg-type]
                **{f"{party}_callback_secret": f"{party}-" + "s" * 40 for party in
                   ("carrier", "payment", "fulfilment", "identity", "invoicing")},
                **{switch: True},
            )  # fmt: skip


# --- Registration through the API -----------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/metrics",
        "https://169.254.169.254/latest/meta-data",
        "https://10.0.0.5:8443/hook",
        "https://100.64.1.1/hook",
        "https://[::1]:8443/hook",
        "https://[::ffff:7f00:1]/hook",
        "https://[fd12:3456::1]/hook",
        "https://[fe80::1]/hook",
        "https://[64:ff9b::a9fe:a9fe]/latest/meta-data",
        "https://0.0.0.0/hook",
        "https://internal.example/hook",
        "https://mixed.example/hook",
        "https://metadata.example/hook",
    ],
)
async def test_registering_an_internal_destination_is_refused_and_changes_nothing(
    url: str, strict: Settings, dns: Resolver, http: httpx.AsyncClient, pool: Pool
) -> None:
    dns.answer("internal.example", ["127.0.0.1"])
    dns.answer("mixed.example", [PUBLIC, "192.168.0.10"])
    dns.answer("metadata.example", ["169.254.169.254"])
    tenant_id, headers = await sponsor(strict)
    answer = await http.post("/v1/webhooks/endpoints", json={"url": url}, headers=headers)
    problem = assert_problem(answer, 422, "webhook-destination-refused")
    assert "webhooks are not sent there" in str(problem["detail"])
    assert await endpoints_of(pool, tenant_id) == []


async def test_the_reported_urls_are_refused_at_registration(
    strict: Settings, http: httpx.AsyncClient, api_url: str, pool: Pool
) -> None:
    """The two URLs of the report: the API's own /metrics on loopback, and cloud metadata."""
    tenant_id, headers = await sponsor(strict)
    for url in (f"{api_url}/metrics", "http://169.254.169.254/latest/meta-data"):
        answer = await http.post("/v1/webhooks/endpoints", json={"url": url}, headers=headers)
        assert_problem(answer, 422, "webhook-destination-refused")
    assert await endpoints_of(pool, tenant_id) == []


async def test_plain_http_is_refused_even_to_a_public_host(
    strict: Settings, dns: Resolver, http: httpx.AsyncClient, pool: Pool
) -> None:
    dns.answer("hooks.example", [PUBLIC])
    tenant_id, headers = await sponsor(strict)
    answer = await http.post(
        "/v1/webhooks/endpoints", json={"url": "http://hooks.example/in"}, headers=headers
    )
    problem = assert_problem(answer, 422, "webhook-destination-refused")
    assert "https" in str(problem["detail"])
    assert await endpoints_of(pool, tenant_id) == []


async def test_moving_an_endpoint_to_an_internal_destination_is_refused(
    strict: Settings, dns: Resolver, http: httpx.AsyncClient, pool: Pool
) -> None:
    dns.answer("hooks.example", [PUBLIC])
    dns.answer("intranet.example", ["172.20.0.3"])
    tenant_id, headers = await sponsor(strict)
    made = await http.post(
        "/v1/webhooks/endpoints", json={"url": "https://hooks.example/in"}, headers=headers
    )
    assert made.status_code == 201, made.text
    endpoint = made.json()
    for url in ("https://intranet.example/in", "https://[::1]/in", "http://hooks.example/in"):
        answer = await http.patch(
            f"/v1/webhooks/endpoints/{endpoint['endpoint_id']}", json={"url": url}, headers=headers
        )
        assert_problem(answer, 422, "webhook-destination-refused")
    after = await http.get(f"/v1/webhooks/endpoints/{endpoint['endpoint_id']}", headers=headers)
    assert after.json()["url"] == "https://hooks.example/in"
    assert after.json()["updated_at"] == endpoint["updated_at"]
    assert await endpoints_of(pool, tenant_id) == [("https://hooks.example/in",)]


# --- Every send ------------------------------------------------------------------------------


def send_policy(*, allow_private: bool = False) -> EgressPolicy:
    # Plain http is allowed here so that the refusal seen is the address's, not the scheme's:
    # the receivers of these tests serve http on 127.0.0.1.
    return EgressPolicy(
        resolver=egress.system_resolver, allow_http=True, allow_private=allow_private
    )


@pytest.fixture
async def sender(dns: Resolver) -> AsyncIterator[httpx.AsyncClient]:
    """The sender's client under the production address policy, resolving through `dns`."""
    policy = EgressPolicy(resolver=dns, allow_http=True, allow_private=False)
    async with egress.client(policy, timeout_seconds=2, max_connections=8) as client:
        yield client


async def deliver(pool: Pool, sender: httpx.AsyncClient, *, at: float = 0) -> int:
    return await delivery.deliver_due(
        pool, sender, now=datetime.now(UTC) + timedelta(seconds=at), limit=50,
        timeout_seconds=2, schedule=(1.0, 1.0),
    )  # fmt: skip


async def registered(pool: Pool, *, tenant_id: UUID, url: str, policy: EgressPolicy) -> UUID:
    """An endpoint registered through the service under `policy`."""
    from webhooks import service
    from webhooks.schemas import EndpointCreate

    async with committed(pool) as conn:
        created = await service.create_endpoint(
            conn, tenant_id=tenant_id, spec=EndpointCreate(url=url), now=datetime.now(UTC),
            egress=policy,
        )  # fmt: skip
    return created.endpoint_id


async def test_a_name_rebound_to_loopback_after_registration_is_refused_at_send(
    strict: Settings,
    dns: Resolver,
    sender: httpx.AsyncClient,
    receiver: Receiver,
    http: httpx.AsyncClient,
    pool: Pool,
) -> None:
    """DNS answers a public address at registration, then the loopback address where an
    internal service listens: the send is refused, the internal service is never reached,
    and the delivery log says why and holds nothing of its answer."""
    internal_port = int(receiver.url.rsplit(":", 1)[1])
    receiver.plan("metrics", Reply(text="flowbill_internal_secret 42"))
    dns.answer("rebind.example", [PUBLIC], ["127.0.0.1"])
    tenant_id, headers = await sponsor(strict)
    url = f"http://rebind.example:{internal_port}/metrics"
    await registered(
        pool, tenant_id=tenant_id, url=url,
        policy=EgressPolicy(resolver=dns, allow_http=True, allow_private=False),
    )  # fmt: skip
    message_id = await emit(pool, tenant_id=tenant_id, event_key="rebind")
    assert await deliver(pool, sender) == 1
    assert receiver.received == []
    [(status, code, excerpt, error)] = await rows(
        pool,
        """SELECT status, status_code, response_excerpt, error FROM webhook_attempts
           WHERE message_id = %s AND attempt_no = 1""",
        message_id,
    )
    assert (status, code, excerpt) == ("failed", None, None)
    assert error == "refused: rebind.example resolves to 127.0.0.1 is loopback"
    # The tenant reads the same in its delivery log, and nothing of the internal answer.
    [(msg_id,)] = await rows(
        pool, "SELECT msg_id FROM webhook_messages WHERE message_id = %s", message_id
    )
    log = await http.get(f"/v1/webhooks/messages/{msg_id}/attempts", headers=headers)
    first = log.json()["items"][0]
    assert first["error"].startswith("refused: ")
    assert first["response_excerpt"] is None
    assert "flowbill_internal_secret" not in log.text
    # Each retry resolves again and is refused again; the receiver never hears of it.
    assert await deliver(pool, sender, at=1.2) == 1
    assert receiver.received == []
    assert dns.lookups.count("rebind.example") == 3


async def test_an_endpoint_stored_before_the_rule_is_refused_at_send(
    strict: Settings,
    sender: httpx.AsyncClient,
    api_url: str,
    pool: Pool,
) -> None:
    """A row that points at the API's own /metrics (written before this rule, or under the
    development setting) is refused at every send: nothing of /metrics is stored."""
    tenant_id, _ = await sponsor(strict)
    async with committed(pool) as conn:
        await conn.execute(
            """INSERT INTO webhook_endpoints (tenant_id, url, secret)
               VALUES (%s, %s, 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw')""",
            (tenant_id, f"{api_url}/metrics"),
        )
    message_id = await emit(pool, tenant_id=tenant_id, event_key="legacy")
    assert await deliver(pool, sender) == 1
    [(status, excerpt, error)] = await rows(
        pool,
        "SELECT status, response_excerpt, error FROM webhook_attempts WHERE message_id = %s"
        " AND attempt_no = 1",
        message_id,
    )
    assert (status, excerpt) == ("failed", None)
    assert error == "refused: 127.0.0.1 is loopback"


async def test_https_is_required_at_send_unless_development_allows_http(
    strict: Settings, dns: Resolver, receiver: Receiver, pool: Pool
) -> None:
    dns.answer("plain.example", ["127.0.0.1"])
    port = int(receiver.url.rsplit(":", 1)[1])
    tenant_id, _ = await sponsor(strict)
    dev = EgressPolicy(resolver=dns, allow_http=True, allow_private=True)
    await registered(pool, tenant_id=tenant_id, url=f"http://plain.example:{port}/in", policy=dev)
    message_id = await emit(pool, tenant_id=tenant_id, event_key="plain")
    https_only = EgressPolicy(resolver=dns, allow_http=False, allow_private=True)
    async with egress.client(https_only, timeout_seconds=2, max_connections=4) as client:
        assert await deliver(pool, client) == 1
    assert receiver.received == []
    [(error,)] = await rows(
        pool,
        "SELECT error FROM webhook_attempts WHERE message_id = %s AND attempt_no = 1",
        message_id,
    )
    assert error == "refused: webhooks are sent over https only"


async def test_the_sender_connects_to_the_address_it_checked_and_keeps_the_host_name(
    strict: Settings, dns: Resolver, receiver: Receiver, pool: Pool
) -> None:
    """Under the development setting, a name only our resolver knows reaches the receiver:
    the connection went to the address the check saw (one lookup, no second one by the
    HTTP client), and the request still names the host."""
    dns.answer("pinned.example", ["127.0.0.1"])
    port = int(receiver.url.rsplit(":", 1)[1])
    tenant_id, _ = await sponsor(strict)
    dev = EgressPolicy(resolver=dns, allow_http=True, allow_private=True)
    url = receiver.plan("pinned").replace("127.0.0.1", "pinned.example")
    await registered(pool, tenant_id=tenant_id, url=url, policy=dev)
    dns.lookups.clear()
    await emit(pool, tenant_id=tenant_id, event_key="pinned")
    async with egress.client(dev, timeout_seconds=2, max_connections=4) as client:
        assert await deliver(pool, client) == 1
    [got] = receiver.at("pinned")
    assert got.headers["host"] == f"pinned.example:{port}"
    assert dns.lookups == ["pinned.example"]


async def test_a_redirect_to_an_internal_address_is_not_followed(
    strict: Settings, dns: Resolver, receiver: Receiver, pool: Pool
) -> None:
    dns.answer("hop.example", ["127.0.0.1"])
    tenant_id, _ = await sponsor(strict)
    dev = EgressPolicy(resolver=dns, allow_http=True, allow_private=True)
    url = receiver.plan(
        "hop", Reply(307, text="", headers={"location": "http://169.254.169.254/latest"})
    ).replace("127.0.0.1", "hop.example")
    await registered(pool, tenant_id=tenant_id, url=url, policy=dev)
    message_id = await emit(pool, tenant_id=tenant_id, event_key="hop")
    async with egress.client(dev, timeout_seconds=2, max_connections=4) as client:
        assert await deliver(pool, client) == 1
    assert dns.lookups.count("169.254.169.254") == 0
    [(status, code)] = await rows(
        pool,
        "SELECT status, status_code FROM webhook_attempts WHERE message_id = %s AND attempt_no = 1",
        message_id,
    )
    assert (status, code) == ("failed", 307)


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A test CA and a server certificate it signed for `tls.example` alone (openssl)."""
    where = tmp_path_factory.mktemp("tls")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=where, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=Test CA",
            "-keyout", "ca.key", "-out", "ca.pem")  # fmt: skip
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=tls.example",
            "-keyout", "server.key", "-out", "server.csr")  # fmt: skip
    (where / "san.ext").write_text("subjectAltName=DNS:tls.example\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-extfile", "san.ext",
            "-out", "server.pem")  # fmt: skip
    return {name: where / name for name in ("ca.pem", "server.pem", "server.key")}


async def test_tls_is_verified_for_the_host_name_while_connecting_to_the_checked_address(
    strict: Settings, dns: Resolver, receiver: Receiver, certificates: dict[str, Path], pool: Pool
) -> None:
    """The connection goes to the address the resolver gave (127.0.0.1 under the development
    setting), and the certificate is checked for the name: the name it was issued for is
    delivered over https, another name on the same address fails the TLS check."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            receiver.app(), host="127.0.0.1", port=port, log_config=None, lifespan="off",
            ssl_certfile=str(certificates["server.pem"]),
            ssl_keyfile=str(certificates["server.key"]),
        )
    )  # fmt: skip
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:
            assert not serving.done()
            await asyncio.sleep(0.02)
        dns.answer("tls.example", ["127.0.0.1"])
        dns.answer("impostor.example", ["127.0.0.1"])
        tenant_id, _ = await sponsor(strict)
        https_local = EgressPolicy(resolver=dns, allow_http=False, allow_private=True)
        for name in ("tls.example", "impostor.example"):
            url = f"https://{name}:{port}/{name}"
            await registered(pool, tenant_id=tenant_id, url=url, policy=https_local)
        good = await emit(pool, tenant_id=tenant_id, event_key="tls", event_type="webhook.test")
        trust = ssl.create_default_context(cafile=str(certificates["ca.pem"]))
        async with egress.client(
            https_local, timeout_seconds=2, max_connections=4, ssl_context=trust
        ) as client:
            assert await deliver(pool, client) == 2
    finally:
        server.should_exit = True
        await serving
    [got] = receiver.at("tls.example")
    assert got.headers["host"] == f"tls.example:{port}"
    assert receiver.at("impostor.example") == []
    logged = await rows(
        pool,
        """SELECT e.url, a.status, a.error FROM webhook_attempts a
           JOIN webhook_endpoints e USING (endpoint_id)
           WHERE a.message_id = %s AND a.attempt_no = 1 ORDER BY e.url""",
        good,
    )
    assert [(url.split("/")[2], status) for url, status, _ in logged] == [
        (f"impostor.example:{port}", "failed"),
        (f"tls.example:{port}", "succeeded"),
    ]
    assert "certificate" in logged[0][2].lower() or "hostname" in logged[0][2].lower()
