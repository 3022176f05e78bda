"""The production deployment files: compose is valid, the broker config is safe."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import pytest

from tests.conftest import REPO, free_port, new_iccid


def test_docker_compose_file_is_valid() -> None:
    result = subprocess.run(
        ["bash", str(REPO / "scripts" / "check-compose.sh")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


@pytest.fixture(scope="module")
def production_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A real Mosquitto on the shipped config, with only paths and port changed."""
    root = tmp_path_factory.mktemp("prod-broker")
    port = free_port()
    conf = (REPO / "deploy" / "mosquitto" / "mosquitto.conf").read_text()
    conf = (
        conf.replace("listener 1883", f"listener {port} 127.0.0.1")
        .replace("/mosquitto/data/passwords", str(root / "passwords"))
        .replace("/mosquitto/config/acl", str(REPO / "deploy" / "mosquitto" / "acl"))
        .replace("/mosquitto/data/", f"{root}/")
        .replace("log_dest stdout", f"log_dest file {root}/mosquitto.log")
    )
    conf += (
        "user root\n"
        if subprocess.run(["id", "-u"], capture_output=True, text=True).stdout.strip() == "0"
        else ""
    )
    (root / "mosquitto.conf").write_text(conf)
    passwords = root / "passwords"
    subprocess.run(
        ["mosquitto_passwd", "-c", "-b", str(passwords), "flowbill", "svc-secret"], check=True
    )
    device = "89860012345678901238"
    subprocess.run(["mosquitto_passwd", "-b", str(passwords), device, "dev-secret"], check=True)
    broker = subprocess.Popen(
        ["mosquitto", "-c", str(root / "mosquitto.conf")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    import time

    deadline = time.monotonic() + 10
    import socket

    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.05)
    yield port
    broker.terminate()
    broker.wait()


async def test_anonymous_and_wrong_passwords_are_refused(production_broker: int) -> None:
    for username, password in ((None, None), ("flowbill", "wrong")):
        with pytest.raises(aiomqtt.MqttError):
            async with aiomqtt.Client(
                "127.0.0.1", production_broker, username=username, password=password
            ):
                pass


async def test_a_device_can_report_only_for_its_own_iccid(production_broker: int) -> None:
    device = "89860012345678901238"
    other = new_iccid()
    received: list[str] = []

    def client(username: str, password: str) -> aiomqtt.Client:
        return aiomqtt.Client("127.0.0.1", production_broker, username=username, password=password)

    async with client("flowbill", "svc-secret") as svc:
        await svc.subscribe("flowbill/v1/sims/+/usage", qos=1)
        # One connection per attempt: the broker may drop a client that breaks its ACL.
        with contextlib.suppress(aiomqtt.MqttError):
            async with client(device, "dev-secret") as dev:
                await dev.publish(f"flowbill/v1/sims/{other}/usage", b"forged", qos=1)
        async with client(device, "dev-secret") as dev:
            await dev.publish(f"flowbill/v1/sims/{device}/usage", b"mine", qos=1)
        async with asyncio.timeout(5):
            async for message in svc.messages:
                received.append(str(message.topic))
                break
        await asyncio.sleep(0.3)
    assert received == [f"flowbill/v1/sims/{device}/usage"]


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
