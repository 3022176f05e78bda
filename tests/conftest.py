"""Fixtures: one real PostgreSQL+TimescaleDB and one real Mosquitto per test session.

Tests isolate themselves by data, not by transactions, where data crosses processes: each
test uses its own ICCIDs (so its own MQTT topics), and asserts on those alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg
import pytest
import uvicorn
from pydantic import SecretStr
from starlette.types import ASGIApp

from api.app import create_app
from devstack import localstack
from flowbill import db
from flowbill.migrate import apply_migrations
from flowbill.paging import InvalidCursor
from flowbill.settings import CALLBACK_PARTIES, CallbackParty, Settings
from ingest import mqtt_session
from ingest.protocol import iccid_check_digit
from simulator.gateways.app import create_gateway_app
from simulator.gateways.behaviour import GatewayBehaviour
from simulator.iot_gateways import IotBehaviour, create_iot_gateway_app
from tenants import service as tenants
from tenants.schemas import Role

REPO = Path(__file__).resolve().parent.parent
# Each outside party signs its callbacks with its own secret, as in production.
CALLBACK_SECRETS: dict[CallbackParty, str] = {
    party: f"test-{party}-callback-secret-of-32-bytes-or-more" for party in CALLBACK_PARTIES
}
OUTPUT = REPO / "test-output"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def new_iccid(prefix: str = "8986990") -> str:
    """A random valid ICCID (20 digits, Luhn), unique enough to be a test's own."""
    body = prefix + "".join(secrets.choice("0123456789") for _ in range(19 - len(prefix)))
    return body + iccid_check_digit(body)


# Each cluster's component roles and passwords, by the cluster's port (`settings_for`).
_COMPONENT_LOGINS: dict[int, dict[str, tuple[str, str]]] = {}


def as_component(settings: Settings, component: str) -> Settings:
    """The settings a component runs with: the same database, as the component's own role
    (`api`, `ingest`, `billing`, `webhooks`), never the owner's, as in production."""
    url = urlsplit(settings.database_dsn)
    assert url.port is not None
    role, password = _COMPONENT_LOGINS[url.port][component]
    netloc = f"{role}:{password}@{url.hostname}:{url.port}"
    return settings.model_copy(
        update={"database_url": SecretStr(urlunsplit(url._replace(netloc=netloc)))}
    )


def settings_for(stack: localstack.LocalStack, **overrides: object) -> Settings:
    logins = {}
    for component in localstack.COMPONENT_ROLES:
        found = urlsplit(stack.component_url(component))
        assert found.username is not None
        assert found.password is not None
        logins[component] = (found.username, found.password)
    _COMPONENT_LOGINS[stack.pg_port] = logins
    values: dict[str, object] = {
        **stack.settings_values(),
        "environment": "test",
        "ingest_metrics_port": 0,
        "ingest_flush_seconds": 0.05,
        # The tests serve the API over plain HTTP on 127.0.0.1: cookies must not be Secure.
        "web_cookie_secure": False,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[localstack.LocalStack]:
    root = tmp_path_factory.mktemp("stack")
    running = localstack.up(root)
    apply_migrations(running.database_url)
    yield running
    localstack.down(root)


@pytest.fixture(scope="session")
def settings(stack: localstack.LocalStack) -> Settings:
    # The API's and the gateway simulator's ports are chosen now, so that each knows where
    # the other is (callbacks go to the API).
    return settings_for(
        stack,
        public_url=f"http://127.0.0.1:{free_port()}",
        gateway_url=f"http://127.0.0.1:{free_port()}",
        gateway_timeout_seconds=0.5,
        **{f"{party}_callback_secret": secret for party, secret in CALLBACK_SECRETS.items()},
        reconcile_grace_seconds=1.0,
    )


@pytest.fixture
async def conn(settings: Settings) -> AsyncIterator[db.Connection]:
    """A connection inside a transaction that is rolled back after the test."""
    connection = await db.connect(settings, application_name="flowbill-test")
    try:
        async with connection.transaction(force_rollback=True):
            yield connection
    finally:
        await connection.close()


@pytest.fixture
async def committed_conn(settings: Settings) -> AsyncIterator[db.Connection]:
    """An autocommit connection, to read what other processes committed."""
    connection = await psycopg.AsyncConnection.connect(settings.database_dsn, autocommit=True)
    try:
        yield connection
    finally:
        await connection.close()


class IngestProcess:
    """A real `flowbill ingest` worker process."""

    def __init__(
        self,
        settings: Settings,
        *,
        client_id: str,
        log_path: Path,
        share_group: str | None = None,
        receive_maximum: int | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.client_id = client_id
        self.metrics_port = free_port()
        self._env = {
            **os.environ,
            "FLOWBILL_DATABASE_URL": as_component(settings, "ingest").database_dsn,
            **settings.broker_environment(),
            "FLOWBILL_INGEST_CLIENT_ID": client_id,
            "FLOWBILL_INGEST_METRICS_PORT": str(self.metrics_port),
            "FLOWBILL_INGEST_FLUSH_SECONDS": "0.05",
            "FLOWBILL_INGEST_COMPACTION_INTERVAL_SECONDS": "1",
            "FLOWBILL_ENVIRONMENT": "test",
        }
        if share_group is not None:
            self._env["FLOWBILL_INGEST_SHARE_GROUP"] = share_group
        if receive_maximum is not None:
            self._env["FLOWBILL_INGEST_RECEIVE_MAXIMUM"] = str(receive_maximum)
        self._env.update(env or {})
        self._log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = self._log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cli", "ingest"],
            env=self._env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
        self.wait_ready()

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"ingest worker exited: {self._log_path.read_text()[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{self.metrics_port}/readyz").status_code == 200:
                    return
            time.sleep(0.1)
        raise TimeoutError(f"ingest worker not ready: {self._log_path.read_text()[-2000:]}")

    def wait_reconnected(self, reconnects: float, timeout: float = 60.0) -> None:
        """Wait until the worker has reconnected to the broker (and re-subscribed)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if (
                    self.metric("flowbill_ingest_broker_reconnects_total") > reconnects
                    and self.metric("flowbill_ingest_broker_connected") == 1
                ):
                    return
            time.sleep(0.05)
        raise TimeoutError("the worker did not reconnect to the broker")

    def log_records(self, message: str) -> list[dict[str, object]]:
        """The worker's JSON log records with this message."""
        records = []
        for line in self._log_path.read_text().splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if record.get("msg") == message:
                    records.append(record)
        return records

    def metric(self, name: str) -> float:
        text = httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics").text
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name) and not line.startswith("#"):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    async def retire(self) -> None:
        """End the worker's broker session: otherwise it keeps its share of the subscription."""
        settings = Settings(
            database_url=self._env["FLOWBILL_DATABASE_URL"],  # type: ignore[arg-type]
            mqtt_port=int(self._env["FLOWBILL_MQTT_PORT"]),
            mqtt_username=self._env.get("FLOWBILL_MQTT_USERNAME"),
            mqtt_password=self._env.get("FLOWBILL_MQTT_PASSWORD"),  # type: ignore[arg-type]
        )
        await mqtt_session.end_session(settings, identifier=self.client_id)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture(scope="session")
def ingest_workers(
    settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[IngestProcess]]:
    """Two workers on the shared subscription, as in production."""
    logs = tmp_path_factory.mktemp("ingest-logs")
    workers = [
        IngestProcess(settings, client_id=f"test-ingest-{n}", log_path=logs / f"worker-{n}.log")
        for n in (1, 2)
    ]
    for worker in workers:
        worker.start()
    yield workers
    for worker in workers:
        worker.stop()


@pytest.fixture(scope="session")
def device_reconciler(
    stack: localstack.LocalStack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[subprocess.Popen[bytes]]:
    """A real `flowbill devices reconcile`: keeps the broker's device passwords and CRL in
    line with the database and drops revoked devices' connections."""
    log = tmp_path_factory.mktemp("devices-logs") / "reconciler.log"
    env = {
        **os.environ,
        **stack.environment(),
        "FLOWBILL_DATABASE_URL": stack.component_url("api"),
        "FLOWBILL_DEVICE_RECONCILE_INTERVAL_SECONDS": "0.2",
        "FLOWBILL_ENVIRONMENT": "test",
    }
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "cli", "devices", "reconcile"],
            env=env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
        )  # fmt: skip
    yield process
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="session")
def api_settings(settings: Settings) -> Settings:
    """The API's own settings: the tests' ones, connecting as the API's database role."""
    return as_component(settings, "api")


@pytest.fixture(scope="session")
async def api_url(settings: Settings, api_settings: Settings) -> AsyncIterator[str]:
    """The API served over real HTTP by uvicorn, where the settings say it is."""
    assert settings.public_url is not None
    async with serving(
        create_app(api_settings), port=int(settings.public_url.rsplit(":", 1)[1])
    ) as url:
        yield url


@pytest.fixture(scope="session")
async def gateway_url(settings: Settings) -> AsyncIterator[str]:
    """The simulated carrier, payment and fulfilment gateways, over real HTTP."""
    app = create_gateway_app(GatewayBehaviour(), callback_secrets=CALLBACK_SECRETS)
    async with serving(app, port=int(settings.gateway_url.rsplit(":", 1)[1])) as url:
        yield url


@pytest.fixture(scope="session")
async def iot_gateway_url(settings: Settings, api_settings: Settings) -> AsyncIterator[str]:
    """The simulated identity-check provider and invoicing service, over real HTTP; the API
    reads its settings object at each request, so it is pointed at this one simulator."""
    app = create_iot_gateway_app(IotBehaviour(), callback_secret=CALLBACK_SECRETS["identity"])
    async with serving(app) as url:
        settings.iot_gateway_url = api_settings.iot_gateway_url = url
        yield url


@pytest.fixture
async def good_day(gateway_url: str, iot_gateway_url: str) -> None:
    """Every simulated outside party back to a good day (no delays, no failures)."""
    # Imported here: the factories import this module.
    from tests.iot_cards.factories import behave_iot
    from tests.wallet.factories import behave

    await behave(gateway_url)
    await behave_iot(iot_gateway_url)


@contextlib.asynccontextmanager
async def serving(app: ASGIApp, *, port: int | None = None) -> AsyncIterator[str]:
    """Serve an ASGI app with uvicorn on 127.0.0.1 (a free port unless given) in the test
    event loop; yields its base URL."""
    port = port or free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=port, log_config=None, lifespan="on",
            timeout_graceful_shutdown=2,
        )
    )  # fmt: skip
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@pytest.fixture
async def http(api_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=api_url, timeout=10) as client:
        yield client


async def make_tenant(
    settings: Settings, *, role: Role, name: str | None = None
) -> tuple[str, str]:
    """A committed tenant of the role; returns (tenant id, API key)."""
    connection = await db.connect(settings, application_name="flowbill-test")
    try:
        async with connection.transaction():
            created = await tenants.create_tenant(
                connection,
                name=name or f"{role.value} {secrets.token_hex(4)}",
                role=role,
                key_label="test",
            )
    finally:
        await connection.close()
    return str(created.tenant.tenant_id), created.key.api_key


@pytest.fixture(scope="session")
async def operator_key(settings: Settings) -> str:
    _, key = await make_tenant(settings, role=Role.OPERATOR)
    return key


async def wait_for(predicate: object, *, timeout: float = 20.0, interval: float = 0.1) -> None:
    """Poll an async predicate until it is true."""
    deadline = time.monotonic() + timeout
    while True:
        if await predicate():  # type: ignore[operator]
            return
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(interval)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def assert_problem(response: httpx.Response, status: int, type_suffix: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, object] = response.json()
    assert body["status"] == status
    assert str(body["type"]).endswith(type_suffix)
    assert body["title"]
    assert "detail" in body
    return body


async def walk_pages(
    http: httpx.AsyncClient,
    path: str,
    *,
    key: str,
    limit: int,
    params: dict[str, str | int] | None = None,
) -> list[list[dict[str, object]]]:
    """Every page of a list endpoint, `limit` items a page, following `next_cursor` to the end;
    checks each answer is a `Page` (`{"items", "next_cursor"}`) and that no page is longer than
    `limit`. Returns the pages' items, page by page."""
    pages: list[list[dict[str, object]]] = []
    cursor: str | None = None
    while True:
        query: dict[str, str | int] = {**(params or {}), "limit": limit}
        if cursor is not None:
            query["cursor"] = cursor
        response = await http.get(path, params=query, headers=bearer(key))
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == {"items", "next_cursor"}, body
        assert len(body["items"]) <= limit
        pages.append(body["items"])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages
        assert body["items"], "a page with a next cursor holds items"
        assert len(pages) < 10_000, "the cursor never ends"


async def walk_items(
    http: httpx.AsyncClient,
    path: str,
    *,
    key: str,
    limit: int = 2,
    params: dict[str, str | int] | None = None,
) -> list[dict[str, object]]:
    """Every item of a list, walked `limit` a page; the list must take more than one page."""
    pages = await walk_pages(http, path, key=key, limit=limit, params=params)
    assert len(pages) > 1, f"{path} fitted in one page of {limit}: nothing was paged"
    return [item for page in pages for item in page]


def distinct(items: Sequence[dict[str, object]], field: str) -> list[str]:
    """The items' `field`, in order, as text; no item may come twice."""
    found = [str(item[field]) for item in items]
    assert len(found) == len(set(found)), f"an item came twice: {found}"
    return found


def assert_each_once_in_order(
    pages: list[list[dict[str, object]]],
    *,
    key: Callable[[dict[str, object]], object],
    expected: Sequence[object],
) -> None:
    """The pages (more than one) hold every expected item exactly once and in the expected
    order; items of other tests may lie between them on a shared list, but no item is on two
    pages."""
    assert len(pages) > 1, "the list fit on one page: nothing was paged"
    seen = [key(item) for page in pages for item in page]
    assert len(seen) == len(set(seen)), "an item was handed out twice"
    wanted = set(expected)
    assert [k for k in seen if k in wanted] == list(expected)


def assert_bad_cursor(response: httpx.Response) -> None:
    """The answer to a cursor the list never handed out: the `invalid-cursor` problem."""
    assert_problem(response, InvalidCursor.status, "invalid-cursor")
