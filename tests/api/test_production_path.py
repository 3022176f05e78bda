"""The production path: Secure cookies outside development, forwarded headers believed only
from the configured proxies, sign-in links on the public web address, /metrics on an internal
port (docs/operations.md, "Limits" and the configuration table)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import ValidationError

from api.app import create_app
from flowbill.settings import CALLBACK_PARTIES, Settings
from tenants.schemas import Role
from tests.conftest import REPO, assert_problem, bearer, free_port, make_tenant, serving


@contextlib.asynccontextmanager
async def own_api(settings: Settings, **overrides: Any) -> AsyncIterator[tuple[str, FastAPI]]:
    app = create_app(settings.model_copy(update=overrides))
    async with serving(app) as url:
        yield url, app


@pytest.mark.parametrize(
    ("environment", "secure"), [("development", False), ("test", True), ("production", True)]
)
async def test_cookies_are_secure_by_default_outside_development(
    settings: Settings, environment: str, *, secure: bool
) -> None:
    # model_copy skips the production checks of secrets: only the cookie rule is under test.
    async with (
        own_api(settings, environment=environment, web_cookie_secure=None) as (url, _),
        httpx.AsyncClient(base_url=url) as client,
    ):
        page = await client.get("/sign-in")
    assert page.status_code == 200
    cookie = page.headers["set-cookie"]
    assert ("; secure" in cookie.lower()) is secure, cookie


async def test_sign_in_links_use_the_web_address_not_the_callback_address(
    settings: Settings,
) -> None:
    _, key = await make_tenant(settings, role=Role.DRIVER)
    web = "https://drivers.flowbill.example"
    async with (
        own_api(settings, public_url="http://api.internal:8000", web_url=web) as (url, _),
        httpx.AsyncClient(base_url=url) as client,
    ):
        made = await client.post("/v1/me/sign-in-links", headers=bearer(key))
    assert made.status_code == 201, made.text
    assert made.json()["url"].startswith(f"{web}/sign-in/link?token=")


@pytest.mark.parametrize(
    ("web_url", "refused"), [("http://drivers.example", True), ("https://drivers.example", False)]
)
def test_production_takes_only_an_https_web_address(web_url: str, *, refused: bool) -> None:
    values: dict[str, object] = {
        "environment": "production",
        "database_url": "postgresql://flowbill@127.0.0.1/flowbill",
        **{
            f"{party}_callback_secret": f"a-real-{party}-callback-secret-of-32-bytes"
            for party in CALLBACK_PARTIES
        },
        "mqtt_password": "a-real-mqtt-password",
        "iot_id_hash_key": "k" * 40,
        "web_url": web_url,
    }
    if refused:
        with pytest.raises(ValidationError, match="FLOWBILL_WEB_URL"):
            Settings(**values)  # type: ignore[arg-type]
    else:
        assert Settings(**values).web_url == web_url  # type: ignore[arg-type]


async def test_metrics_can_move_to_an_internal_port(settings: Settings) -> None:
    port = free_port()
    async with (
        own_api(settings, api_metrics_port=port) as (url, _),
        httpx.AsyncClient(base_url=url) as client,
    ):
        assert (await client.get("/healthz")).status_code == 200
        assert_problem(await client.get("/metrics"), 404, "not-found")
        internal = await client.get(f"http://127.0.0.1:{port}/metrics")
        assert internal.status_code == 200
        assert "flowbill_http_requests_total" in internal.text
    # The internal server ends with the API.
    async with httpx.AsyncClient() as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(f"http://127.0.0.1:{port}/metrics", timeout=2)


@contextlib.contextmanager
def flowbill_serve(settings: Settings, **env: str) -> Iterator[str]:
    """`flowbill serve` as production runs it, in a process of its own."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
        env={
            **os.environ,
            "FLOWBILL_DATABASE_URL": settings.database_dsn,
            "FLOWBILL_MQTT_PORT": str(settings.mqtt_port),
            "FLOWBILL_LOG_LEVEL": "WARNING",
            **env,
        },
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, "flowbill serve exited"
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            assert time.monotonic() < deadline, "flowbill serve did not start"
            time.sleep(0.1)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=20)


@pytest.mark.parametrize(("allowed", "secure"), [("127.0.0.1", True), ("10.9.9.9", False)])
def test_forwarded_proto_is_believed_only_from_the_allowed_proxies(
    settings: Settings, allowed: str, *, secure: bool
) -> None:
    # In development the cookie is Secure only for https requests: behind a TLS proxy, that
    # is X-Forwarded-Proto, from a proxy in FLOWBILL_FORWARDED_ALLOW_IPS.
    with flowbill_serve(
        settings, FLOWBILL_ENVIRONMENT="development", FLOWBILL_FORWARDED_ALLOW_IPS=allowed
    ) as base:
        page = httpx.get(f"{base}/sign-in", headers={"X-Forwarded-Proto": "https"})
    assert page.status_code == 200
    assert ("; secure" in page.headers["set-cookie"].lower()) is secure


def test_serve_refuses_an_internal_metrics_port_with_several_workers(settings: Settings) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "cli", "serve", "--workers", "2"],
        env={
            **os.environ,
            "FLOWBILL_DATABASE_URL": settings.database_dsn,
            "FLOWBILL_API_METRICS_PORT": str(free_port()),
        },
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "FLOWBILL_API_METRICS_PORT" in done.stdout
