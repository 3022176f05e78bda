"""Device identity attacked against the real broker (Mosquitto with TLS listeners, the
password file and CRL the reconciler writes, dynamic security) and the real ingest workers:
anonymous devices, devices reaching for another SIM's topics, certificates from another CA,
expired or revoked, a rotated-out password, and credential requests for another owner's
SIM. Each refusal changes nothing in storage."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiomqtt
import httpx
import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from devices.ca import DeviceCa
from flowbill.settings import Settings
from ingest import mqtt_session
from tenants.schemas import Role
from tests.conftest import assert_problem, bearer, make_tenant, new_iccid
from tests.devices.factories import key_pem, provisioned, tls_context
from tests.ingest.test_end_to_end import report, report_count

pytestmark = pytest.mark.usefixtures("device_reconciler", "ingest_workers")

# A revocation must take effect within this (the reconciler polls every 0.2 s in tests).
EFFECTIVE_WITHIN = 5.0


def _cert_client(settings: Settings, context: Any) -> aiomqtt.Client:
    return aiomqtt.Client(
        "localhost", settings.mqtt_tls_port or 0, tls_context=context,
        protocol=aiomqtt.ProtocolVersion.V5, timeout=5,
    )  # fmt: skip


def _password_client(settings: Settings, username: str | None, password: str | None,
                     folder: Path) -> aiomqtt.Client:  # fmt: skip
    assert settings.device_ca_file is not None
    return aiomqtt.Client(
        "localhost", settings.mqtt_tls_password_port or 0,
        tls_context=tls_context(settings.device_ca_file, folder),
        username=username, password=password, protocol=aiomqtt.ProtocolVersion.V5, timeout=5,
    )  # fmt: skip


async def _issue(http: httpx.AsyncClient, operator_key: str, iccid: str, kind: str) -> Any:
    answer = await http.post(
        f"/v1/operator/sims/{iccid}/device-credentials", json={"kind": kind},
        headers=bearer(operator_key),
    )  # fmt: skip
    assert answer.status_code == 201, answer.text
    return answer.json()


def _device_context(settings: Settings, issued: Any, folder: Path) -> Any:
    assert settings.device_ca_file is not None
    return tls_context(
        settings.device_ca_file, folder, certificate_pem=issued["certificate_pem"],
        key=issued["private_key_pem"],
    )  # fmt: skip


async def _refused(client: aiomqtt.Client) -> bool:
    try:
        async with client:
            return False
    except aiomqtt.MqttError:
        return True


async def _until(predicate: Any, *, within: float = EFFECTIVE_WITHIN) -> float:
    """Poll until the predicate holds; returns the seconds it took."""
    started = asyncio.get_running_loop().time()
    while not await predicate():
        if asyncio.get_running_loop().time() - started > within:
            raise TimeoutError(f"not effective within {within} s")
        await asyncio.sleep(0.1)
    return asyncio.get_running_loop().time() - started


async def _counts(conn: psycopg.AsyncConnection, *iccids: str) -> list[tuple[object, ...]]:
    cur = await conn.execute(
        """SELECT (SELECT count(*) FROM usage_reports WHERE iccid = ANY(%(i)s)),
                  (SELECT count(*) FROM ingest_rejects WHERE topic ~ %(t)s),
                  (SELECT count(*) FROM device_credentials WHERE iccid = ANY(%(i)s)),
                  (SELECT max(changed_at) FROM device_credentials WHERE iccid = ANY(%(i)s))""",
        {"i": list(iccids), "t": "|".join(iccids)},
    )
    return list(await cur.fetchall())


@contextlib.asynccontextmanager
async def _connected(client: aiomqtt.Client) -> AsyncIterator[aiomqtt.Client]:
    async with client:
        yield client


async def test_anonymous_devices_are_refused_everywhere(
    settings: Settings, committed_conn: psycopg.AsyncConnection, tmp_path: Path
) -> None:
    (iccid,) = [new_iccid()]
    before = await _counts(committed_conn, iccid)
    plain = aiomqtt.Client("127.0.0.1", settings.mqtt_port, timeout=5)
    assert await _refused(plain)
    assert await _refused(_password_client(settings, None, None, tmp_path))
    assert await _refused(_password_client(settings, iccid, "guess", tmp_path))
    assert settings.device_ca_file is not None
    # The certificate listener wants a certificate: TLS alone is not enough.
    assert await _refused(_cert_client(settings, tls_context(settings.device_ca_file, tmp_path)))
    publish = await asyncio.create_subprocess_exec(
        "mosquitto_pub", "-h", "127.0.0.1", "-p", str(settings.mqtt_port), "-q", "1",
        "-t", f"flowbill/v1/sims/{iccid}/usage", "-m", report(iccid, 1, {"a": (1, 1)}).decode(),
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await publish.communicate()
    assert publish.returncode != 0
    assert "not authori" in err.decode().lower()
    assert await _counts(committed_conn, iccid) == before


async def test_a_device_cannot_report_for_another_sim_nor_read_its_coverage(
    http: httpx.AsyncClient, operator_key: str, settings: Settings,
    committed_conn: psycopg.AsyncConnection, tmp_path: Path,
) -> None:  # fmt: skip
    a, b = await provisioned(http, operator_key, count=2)
    issued_a = await _issue(http, operator_key, a, "certificate")
    issued_b = await _issue(http, operator_key, b, "password")
    before_b = await _counts(committed_conn, b)
    # Both SIMs have a retained coverage message, as billing publishes it.
    async with mqtt_session.broker_client(settings) as service:
        for sim in (a, b):
            await service.publish(
                f"flowbill/v1/sims/{sim}/coverage", f'{{"iccid": "{sim}"}}', qos=1, retain=True
            )
    async with _connected(
        _cert_client(settings, _device_context(settings, issued_a, tmp_path / "a"))
    ) as device_a:
        # Another SIM's coverage, by name or by wildcard: never delivered. (Mosquitto 2.0's
        # ACL file answers every SUBACK with success and checks each message it would deliver.)
        await device_a.subscribe(f"flowbill/v1/sims/{b}/coverage", qos=1)
        await device_a.subscribe("flowbill/v1/sims/+/coverage", qos=1)
        await device_a.subscribe("#", qos=1)
        await device_a.subscribe(f"flowbill/v1/sims/{a}/coverage", qos=1)
        # A last message on A's own topic: whatever the broker let through comes before it.
        async with mqtt_session.broker_client(settings) as service:
            await service.publish(f"flowbill/v1/sims/{a}/coverage", b"last", qos=1)
        received = []
        async with asyncio.timeout(5):
            async for message in device_a.messages:
                received.append(str(message.topic))
                if message.payload == b"last":
                    break
        assert set(received) == {f"flowbill/v1/sims/{a}/coverage"}
        # Another SIM's usage: the broker refuses the publish (MQTT v5 "not authorized").
        with contextlib.suppress(aiomqtt.MqttError):
            await device_a.publish(
                f"flowbill/v1/sims/{b}/usage", report(b, 1, {"x": (9, 9)}), qos=1
            )
    async with _connected(
        _cert_client(settings, _device_context(settings, issued_a, tmp_path / "a2"))
    ) as device_a:
        await device_a.publish(f"flowbill/v1/sims/{a}/usage", report(a, 1, {"x": (1, 1)}), qos=1)

    async def own_landed() -> bool:
        return await report_count(committed_conn, a) == 1

    await _until(own_landed, within=20)
    # A's own report went through the same workers, after the forged one: nothing of B's.
    assert await _counts(committed_conn, b) == before_b
    # B's password gives nothing of A's either.
    await _until(
        lambda: _works(_password_client(settings, b, issued_b["password"], tmp_path)), within=10
    )
    async with _connected(_password_client(settings, b, issued_b["password"], tmp_path)) as dev_b:
        await dev_b.subscribe(f"flowbill/v1/sims/{a}/coverage", qos=1)
        await dev_b.subscribe(f"flowbill/v1/sims/{b}/coverage", qos=1)
        async with asyncio.timeout(5):
            async for message in dev_b.messages:
                assert str(message.topic) == f"flowbill/v1/sims/{b}/coverage"
                break


async def _works(client: aiomqtt.Client) -> bool:
    return not await _refused(client)


async def test_certificates_of_another_ca_or_expired_are_refused(
    settings: Settings, committed_conn: psycopg.AsyncConnection, tmp_path: Path
) -> None:
    iccid = new_iccid()
    before = await _counts(committed_conn, iccid)
    now = datetime.now(UTC)
    assert settings.device_ca_file is not None
    assert settings.device_ca_dir is not None
    stranger = DeviceCa.create(tmp_path / "other-ca", now=now, name="Flowbill local device CA")
    forged = stranger.issue_with_new_key(iccid, now=now, days=30)
    ours = DeviceCa.load(settings.device_ca_dir)
    key = ec.generate_private_key(ec.SECP256R1())
    expired = ours.issue(iccid, key.public_key(), now=now - timedelta(days=3), days=1)
    for name, pem, private in (
        ("forged", forged.certificate_pem, forged.private_key_pem),
        ("expired", expired.certificate_pem, key_pem(key)),
    ):
        context = tls_context(
            settings.device_ca_file, tmp_path / name, certificate_pem=pem, key=private
        )
        assert await _refused(_cert_client(settings, context)), name
    assert await _counts(committed_conn, iccid) == before


async def test_a_revoked_certificate_is_dropped_and_refused_within_seconds(
    http: httpx.AsyncClient, operator_key: str, settings: Settings,
    committed_conn: psycopg.AsyncConnection, tmp_path: Path,
) -> None:  # fmt: skip
    (iccid,) = await provisioned(http, operator_key)
    issued = await _issue(http, operator_key, iccid, "certificate")
    context = _device_context(settings, issued, tmp_path)
    device = _cert_client(settings, context)
    dropped = asyncio.Event()

    async def hold() -> None:
        try:
            async with device:
                await device.subscribe(f"flowbill/v1/sims/{iccid}/coverage", qos=1)
                async for _ in device.messages:
                    pass
        except aiomqtt.MqttError:
            dropped.set()

    holder = asyncio.create_task(hold())
    await _until(lambda: _works(_cert_client(settings, context)))
    await asyncio.sleep(0.3)
    assert not dropped.is_set()
    revoked = await http.delete(
        f"/v1/operator/sims/{iccid}/device-credentials", headers=bearer(operator_key)
    )
    assert revoked.status_code == 200
    after_revocation = await _counts(committed_conn, iccid)

    async def gone() -> bool:
        return dropped.is_set()

    await _until(gone)
    await _until(lambda: _refused(_cert_client(settings, context)))
    await holder
    assert await _counts(committed_conn, iccid) == after_revocation
    # A new credential for the SIM does not bring the revoked one back.
    await _issue(http, operator_key, iccid, "certificate")
    await asyncio.sleep(1.0)
    assert await _refused(_cert_client(settings, context))


async def test_a_rotated_out_password_is_refused_and_the_new_one_works(
    http: httpx.AsyncClient, operator_key: str, settings: Settings,
    committed_conn: psycopg.AsyncConnection, tmp_path: Path,
) -> None:  # fmt: skip
    (iccid,) = await provisioned(http, operator_key)
    old = (await _issue(http, operator_key, iccid, "password"))["password"]
    await _until(lambda: _works(_password_client(settings, iccid, old, tmp_path)), within=10)
    rotated = await http.post(
        f"/v1/operator/sims/{iccid}/device-credentials/rotate", json={"kind": "password"},
        headers=bearer(operator_key),
    )  # fmt: skip
    assert rotated.status_code == 201
    new = rotated.json()["password"]
    before = await _counts(committed_conn, iccid)
    await _until(lambda: _refused(_password_client(settings, iccid, old, tmp_path)))
    assert await _works(_password_client(settings, iccid, new, tmp_path))
    assert await _counts(committed_conn, iccid) == before


async def test_credentials_of_another_owners_sim_answer_404_and_change_nothing(
    http: httpx.AsyncClient, operator_key: str, settings: Settings,
    committed_conn: psycopg.AsyncConnection,
) -> None:  # fmt: skip
    owner_id, owner_key = await make_tenant(settings, role=Role.SPONSOR)
    _, rival_key = await make_tenant(settings, role=Role.SPONSOR)
    _, merchant_key = await make_tenant(settings, role=Role.MERCHANT)
    (iccid,) = await provisioned(http, operator_key, owner_id=owner_id)
    await _issue(http, operator_key, iccid, "password")
    unowned = (await provisioned(http, operator_key))[0]
    before = await _counts(committed_conn, iccid, unowned)
    for audience, key in (("sponsor", rival_key), ("merchant", merchant_key)):
        for sim in (iccid, unowned, new_iccid()):
            path = f"/v1/{audience}/sims/{sim}/device-credentials"
            headers = bearer(key)
            for answer in (
                await http.post(path, json={"kind": "password"}, headers=headers),
                await http.post(f"{path}/rotate", json={"kind": "certificate"}, headers=headers),
                await http.delete(path, headers=headers),
                await http.get(path, headers=headers),
            ):
                assert_problem(answer, 404, "sim-not-found")
    # The owner itself is answered: the 404 is about whose SIM it is.
    mine = await http.get(f"/v1/sponsor/sims/{iccid}/device-credentials", headers=bearer(owner_key))
    assert mine.status_code == 200
    assert await _counts(committed_conn, iccid, unowned) == before
