"""The reconciler brings the broker in line with the database: after a broker lost its
state, and when a rotation's overlap runs out. Against the real broker and the running
`flowbill devices reconcile`."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psycopg
import pytest

from devices.broker import CRL, PASSWORDS
from devices.ca import DeviceCa
from devstack import localstack
from flowbill.settings import Settings
from tests.conftest import IngestProcess, bearer
from tests.devices.factories import provisioned
from tests.security.test_device_identity import (
    _cert_client,
    _device_context,
    _issue,
    _password_client,
    _refused,
    _until,
    _works,
)

pytestmark = pytest.mark.usefixtures("device_reconciler")


async def _live_passwords(conn: psycopg.AsyncConnection) -> int:
    cur = await conn.execute(
        """SELECT count(*) FROM device_credentials WHERE kind = 'password'
           AND revoked_at IS NULL AND (retires_at IS NULL OR retires_at > now())"""
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


def _lose_broker_state(stack: localstack.LocalStack, settings: Settings) -> None:
    """Stop the broker and give it an empty password file and an empty (valid) CRL, as a
    broker on a new volume would have."""
    assert settings.device_broker_dir is not None
    assert settings.device_ca_dir is not None
    localstack.stop_mosquitto(stack)
    broker = Path(settings.device_broker_dir)
    (broker / PASSWORDS).write_text("")
    ca = DeviceCa.load(settings.device_ca_dir)
    (broker / CRL).write_bytes(ca.crl([], now=datetime.now(UTC), valid_for=timedelta(days=1)))
    localstack.start_mosquitto(stack)


async def test_a_broker_that_lost_its_state_gets_every_live_credential_and_no_revoked_one(
    http: httpx.AsyncClient, operator_key: str, settings: Settings,
    stack: localstack.LocalStack, ingest_workers: list[IngestProcess],
    committed_conn: psycopg.AsyncConnection, tmp_path: Path,
) -> None:  # fmt: skip
    password_sim, revoked_sim, live_sim = await provisioned(http, operator_key, count=3)
    secret = (await _issue(http, operator_key, password_sim, "password"))["password"]
    revoked = _device_context(
        settings, await _issue(http, operator_key, revoked_sim, "certificate"), tmp_path / "r"
    )
    live = _device_context(
        settings, await _issue(http, operator_key, live_sim, "certificate"), tmp_path / "l"
    )
    deleted = await http.delete(
        f"/v1/operator/sims/{revoked_sim}/device-credentials", headers=bearer(operator_key)
    )
    assert deleted.status_code == 200
    await _until(lambda: _works(_password_client(settings, password_sim, secret, tmp_path)))
    await _until(lambda: _refused(_cert_client(settings, revoked)))
    cur = await committed_conn.execute("SELECT count(*) FROM device_credentials")
    issued_before = await cur.fetchone()
    reconnects = [w.metric("flowbill_ingest_broker_reconnects_total") for w in ingest_workers]

    await asyncio.to_thread(_lose_broker_state, stack, settings)

    await _until(lambda: _works(_password_client(settings, password_sim, secret, tmp_path)))
    await _until(lambda: _refused(_cert_client(settings, revoked)))
    assert await _works(_cert_client(settings, live))
    assert settings.device_broker_dir is not None
    lines = (Path(settings.device_broker_dir) / PASSWORDS).read_text().splitlines()
    users = [line.split(":", 1)[0] for line in lines]
    assert len(users) == len(set(users)) == await _live_passwords(committed_conn)
    cur = await committed_conn.execute("SELECT count(*) FROM device_credentials")
    assert await cur.fetchone() == issued_before  # nothing issued twice
    for worker, before in zip(ingest_workers, reconnects, strict=True):
        await asyncio.to_thread(worker.wait_reconnected, before)


async def test_a_rotated_certificate_works_through_its_overlap_and_not_after(
    http: httpx.AsyncClient, operator_key: str, settings: Settings,
    committed_conn: psycopg.AsyncConnection, tmp_path: Path,
) -> None:  # fmt: skip
    (iccid,) = await provisioned(http, operator_key)
    old = _device_context(
        settings, await _issue(http, operator_key, iccid, "certificate"), tmp_path / "old"
    )
    rotated = await http.post(
        f"/v1/operator/sims/{iccid}/device-credentials/rotate", json={"kind": "certificate"},
        headers=bearer(operator_key),
    )  # fmt: skip
    assert rotated.status_code == 201
    new = _device_context(settings, rotated.json(), tmp_path / "new")
    await asyncio.sleep(0.5)  # a reconciler pass or two
    assert await _works(_cert_client(settings, old))
    assert await _works(_cert_client(settings, new))
    # The overlap runs out (brought forward here rather than waited for).
    await committed_conn.execute(
        """UPDATE device_credentials SET retires_at = now() - interval '1 second'
           WHERE iccid = %s AND retires_at IS NOT NULL""",
        (iccid,),
    )
    await _until(lambda: _refused(_cert_client(settings, old)))
    assert await _works(_cert_client(settings, new))
