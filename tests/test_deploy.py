"""The production deployment files: compose is valid, the broker config is safe."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiomqtt
import pytest

from devices import passwords
from devices.broker import ensure_service_account
from devices.ca import DeviceCa, IssuedCertificate
from devstack.localstack.identity import DYNSEC_PLUGIN
from flowbill.settings import Settings
from ingest import mqtt_session
from tests.conftest import REPO, free_port, new_iccid


def test_docker_compose_file_is_valid() -> None:
    result = subprocess.run(
        ["bash", str(REPO / "scripts" / "check-compose.sh")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


@dataclass(frozen=True)
class ProductionBroker:
    settings: Settings
    tls_port: int
    password_port: int
    ca: DeviceCa
    root: Path


DEVICE = "89860012345678901238"
DEVICE_PASSWORD = "dev-secret-of-the-test-device"


@pytest.fixture(scope="module")
def production_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProductionBroker]:
    """A real Mosquitto on the shipped config, with only paths and ports changed, the files
    the entrypoint and the device reconciler would give it, and the services' account
    created as the reconciler creates it."""
    root = tmp_path_factory.mktemp("prod-broker")
    port, tls_port, password_port = free_port(), free_port(), free_port()
    now = datetime.now(UTC)
    ca = DeviceCa.create(root / "device-ca", now=now, name="test device CA")
    (root / "certs").mkdir()
    cert, key = ca.server_certificate(["localhost", "127.0.0.1"], now=now, days=2)
    (root / "certs" / "server.crt").write_text(cert)
    (root / "certs" / "server.key").write_text(key)
    (root / "devices").mkdir()
    (root / "devices" / "passwords").write_text(
        f"{DEVICE}:{passwords.broker_hash(DEVICE_PASSWORD)}\n"
    )
    (root / "devices" / "crl.pem").write_bytes(ca.crl([], now=now, valid_for=timedelta(days=1)))
    subprocess.run(
        ["mosquitto_ctrl", "dynsec", "init", str(root / "dynamic-security.json"),
         "flowbill-admin", "admin-secret"],
        check=True, capture_output=True,
    )  # fmt: skip
    conf = (REPO / "deploy" / "mosquitto" / "mosquitto.conf").read_text()
    conf = (
        conf.replace("listener 1883", f"listener {port} 127.0.0.1")
        .replace("listener 8883", f"listener {tls_port} 127.0.0.1")
        .replace("listener 8884", f"listener {password_port} 127.0.0.1")
        .replace("/usr/lib/mosquitto_dynamic_security.so", DYNSEC_PLUGIN)
        .replace("/mosquitto/config/acl", str(REPO / "deploy" / "mosquitto" / "acl"))
        .replace("/mosquitto/device-ca/", f"{root}/device-ca/")
        .replace("/mosquitto/certs/", f"{root}/certs/")
        .replace("/mosquitto/devices/", f"{root}/devices/")
        .replace("/mosquitto/data/", f"{root}/")
        .replace("log_dest stderr", f"log_dest file {root}/mosquitto.log")
    )
    assert " /mosquitto/" not in conf, "a path of the container is left"
    conf += (
        "user root\n"
        if subprocess.run(["id", "-u"], capture_output=True, text=True).stdout.strip() == "0"
        else ""
    )
    (root / "mosquitto.conf").write_text(conf)
    broker = subprocess.Popen(
        ["mosquitto", "-c", str(root / "mosquitto.conf")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.05)
    settings = Settings(
        database_url="postgresql://unused@127.0.0.1/unused",  # type: ignore[arg-type]
        mqtt_port=port, mqtt_username="flowbill", mqtt_password="svc-secret",  # type: ignore[arg-type]
        mqtt_control_username="flowbill-admin", mqtt_control_password="admin-secret",  # type: ignore[arg-type]
    )  # fmt: skip
    asyncio.run(ensure_service_account(settings))
    yield ProductionBroker(settings, tls_port, password_port, ca, root)
    broker.terminate()
    broker.wait()


def _device(broker: ProductionBroker, iccid: str, **kwargs: object) -> aiomqtt.Client:
    context = ssl.create_default_context(cafile=str(broker.root / "device-ca" / "ca.pem"))
    if "certificate" in kwargs:
        issued = kwargs.pop("certificate")
        assert isinstance(issued, IssuedCertificate)
        assert issued.private_key_pem is not None
        folder = broker.root / f"device-{iccid}"
        folder.mkdir(exist_ok=True)
        (folder / "c.pem").write_text(issued.certificate_pem)
        (folder / "c.key").write_text(issued.private_key_pem)
        context.load_cert_chain(folder / "c.pem", folder / "c.key")
        port = broker.tls_port
    else:
        port = broker.password_port
    return aiomqtt.Client(
        "localhost", port, tls_context=context, protocol=aiomqtt.ProtocolVersion.V5,
        timeout=5, **kwargs,  # type: ignore[arg-type]
    )  # fmt: skip


async def test_anonymous_and_wrong_passwords_are_refused(
    production_broker: ProductionBroker,
) -> None:
    port = production_broker.settings.mqtt_port
    for username, password in ((None, None), ("flowbill", "wrong"), (DEVICE, "wrong")):
        with pytest.raises(aiomqtt.MqttError):
            async with aiomqtt.Client("127.0.0.1", port, username=username, password=password):
                pass
    with pytest.raises(aiomqtt.MqttError):
        async with _device(production_broker, DEVICE, username=DEVICE, password="wrong"):
            pass


async def test_a_device_can_report_only_for_its_own_iccid(
    production_broker: ProductionBroker,
) -> None:
    other = new_iccid()
    with_certificate = new_iccid()
    issued = production_broker.ca.issue_with_new_key(
        with_certificate, now=datetime.now(UTC), days=1
    )
    received: list[str] = []
    async with mqtt_session.broker_client(production_broker.settings) as svc:
        await svc.subscribe("flowbill/v1/sims/+/usage", qos=1)
        # One connection per attempt: the broker drops a client that breaks its ACL.
        for attempt in (
            _device(production_broker, DEVICE, username=DEVICE, password=DEVICE_PASSWORD),
            _device(production_broker, with_certificate, certificate=issued),
        ):
            with contextlib.suppress(aiomqtt.MqttError):
                async with attempt as dev:
                    await dev.publish(f"flowbill/v1/sims/{other}/usage", b"forged", qos=1)
        async with _device(
            production_broker, DEVICE, username=DEVICE, password=DEVICE_PASSWORD
        ) as dev:
            await dev.publish(f"flowbill/v1/sims/{DEVICE}/usage", b"mine", qos=1)
        async with _device(production_broker, with_certificate, certificate=issued) as dev:
            await dev.publish(f"flowbill/v1/sims/{with_certificate}/usage", b"mine", qos=1)
        async with asyncio.timeout(5):
            async for message in svc.messages:
                received.append(str(message.topic))
                if len(received) == 2:
                    break
        await asyncio.sleep(0.3)
    assert received == [
        f"flowbill/v1/sims/{DEVICE}/usage",
        f"flowbill/v1/sims/{with_certificate}/usage",
    ]


def test_the_broker_config_never_drops_for_slow_consumers() -> None:
    conf = (REPO / "deploy" / "mosquitto" / "mosquitto.conf").read_text().splitlines()
    assert "max_queued_messages 0" in conf
    assert "persistence true" in conf
    assert "allow_anonymous false" in conf


def test_the_local_stack_broker_never_drops_either(tmp_path: Path) -> None:
    from devstack.localstack import LocalStack
    from devstack.localstack.mosquitto import _write_mosquitto_conf

    stack = LocalStack(root=tmp_path, pg_port=1, mqtt_port=2)
    _write_mosquitto_conf(stack)
    conf = (tmp_path / "mosquitto" / "mosquitto.conf").read_text().splitlines()
    assert "max_queued_messages 0" in conf
    assert "persistence true" in conf
