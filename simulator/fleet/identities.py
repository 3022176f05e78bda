"""The fleet's devices, each on its own TLS connection with its own identity.

An identity is what Flowbill issued for the SIM (the answer of
`POST /v1/operator/sims?device_credentials=…` or of `…/device-credentials`): a certificate
and key, or a user name and password. A device with a certificate connects to the broker's
certificate listener, one with a password to the password listener; both check the broker
against the CA file.
"""

from __future__ import annotations

import contextlib
import json
import os
import ssl
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt

from simulator.fleet.plan import PlannedMessage


@dataclass(frozen=True)
class DeviceIdentity:
    iccid: str
    certificate_pem: str | None = None
    private_key_pem: str | None = None
    password: str | None = None

    @property
    def kind(self) -> str:
        return "certificate" if self.certificate_pem is not None else "password"


@dataclass(frozen=True)
class DeviceListeners:
    """Where devices connect: the broker's TLS listeners and the CA that signed its
    certificate; `folder` keeps each device's key (0600) for the TLS library."""

    host: str
    certificate_port: int
    password_port: int
    ca_file: str
    folder: Path


def identities_from(issued: Sequence[Mapping[str, Any]]) -> dict[str, DeviceIdentity]:
    """Identities from the API's answers (each shown once: keep them)."""
    found = {}
    for item in issued:
        iccid = str(item["iccid"])
        found[iccid] = DeviceIdentity(
            iccid=iccid,
            certificate_pem=item.get("certificate_pem"),
            private_key_pem=item.get("private_key_pem"),
            password=item.get("password"),
        )
    return found


def load_identities(path: Path) -> dict[str, DeviceIdentity]:
    """Identities kept in a JSON file: a list of the API's answers, or a provisioning answer
    (`{"device_credentials": [...]}`)."""
    data = json.loads(path.read_text())
    return identities_from(data["device_credentials"] if isinstance(data, dict) else data)


def _private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


def tls_context(listeners: DeviceListeners, identity: DeviceIdentity) -> ssl.SSLContext:
    """The device's TLS context: trusts the broker's CA, presents its certificate if any."""
    context = ssl.create_default_context(cafile=listeners.ca_file)
    if identity.certificate_pem is not None:
        if identity.private_key_pem is None:
            raise ValueError(f"{identity.iccid}: a certificate without its key")
        listeners.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        cert, key = (listeners.folder / f"{identity.iccid}.{x}" for x in ("pem", "key"))
        _private(cert, identity.certificate_pem)
        _private(key, identity.private_key_pem)
        context.load_cert_chain(cert, key)
    return context


def device_client(
    listeners: DeviceListeners, identity: DeviceIdentity, *, in_flight: int
) -> aiomqtt.Client:
    """An MQTT v5 client for one device, over TLS with its identity."""
    certificate = identity.certificate_pem is not None
    return aiomqtt.Client(
        listeners.host,
        listeners.certificate_port if certificate else listeners.password_port,
        username=None if certificate else identity.iccid,
        password=identity.password,
        tls_context=tls_context(listeners, identity),
        protocol=aiomqtt.ProtocolVersion.V5,
        max_inflight_messages=in_flight,
        max_queued_outgoing_messages=0,
    )


def topic_iccid(topic: str) -> str:
    """The SIM a usage topic names (`flowbill/v1/sims/{iccid}/usage`)."""
    parts = topic.split("/")
    return parts[3] if len(parts) > 3 else ""


def sendable(
    messages: Sequence[PlannedMessage], identities: Mapping[str, DeviceIdentity]
) -> tuple[list[PlannedMessage], list[PlannedMessage]]:
    """The messages a device of the fleet may send (its own topic), and the others: a topic
    that names no device (a faulty firmware's) is refused by the broker, which also drops
    the connection that tried, so the simulator does not send them."""
    own: list[PlannedMessage] = []
    stray: list[PlannedMessage] = []
    for message in messages:
        (own if topic_iccid(message.topic) in identities else stray).append(message)
    return own, stray


@contextlib.contextmanager
def removed_afterwards(folder: Path) -> Iterator[None]:
    """The devices' key files do not outlive the run."""
    try:
        yield
    finally:
        for path in folder.glob("*.key"):
            path.unlink(missing_ok=True)
