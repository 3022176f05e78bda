"""The broker's copy of device identity, and the dynamic-security control client.

Mosquitto 2.0 is given device identity in three parts:
- the **password file** (`passwords`): `ICCID:$7$…` for every password the broker should
  accept, written from the database's hashes;
- the **CRL** (`crl.pem`): every unexpired certificate that is revoked or rotated out, signed
  by the device CA; the certificate listener checks it at each TLS handshake;
- both are re-read on SIGHUP, which also disconnects clients whose password no longer
  works. A certificate device already connected is dropped through dynamic security:
  creating and deleting a client of its user name kicks every connection of that name.

Why not a dynamic-security client per device: Mosquitto 2.0's plugin rewrites its whole
JSON file after every command (100,000 devices make that quadratic), takes passwords only in
clear (a reconciler could not restore a replaced broker from hashes), and is never asked at
all for a certificate client (`use_identity_as_username` clears authentication). Files
rendered from the database are complete by construction: nothing issued twice, nothing
revoked coming back, whatever state the broker was in.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import aiomqtt

from flowbill.settings import Settings

log = logging.getLogger(__name__)

PASSWORDS = "passwords"
CRL = "crl.pem"
CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
RESPONSE_TOPIC = f"{CONTROL_TOPIC}/response"
# Commands per control message: one message, one answer.
COMMANDS_PER_MESSAGE = 500
CONTROL_TIMEOUT_SECONDS = 10.0


class BrokerUnreachable(Exception):
    """The broker's files or its control API could not be reached."""


def _replace_private(path: Path, data: bytes) -> None:
    # Written beside and renamed over: the broker never reads half a file.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    if os.geteuid() == 0:
        # Run as root beside a broker that runs as its own user (compose): the files belong
        # to whoever owns the folder, the broker, so that only it can read them.
        folder = path.parent.stat()
        os.chown(tmp, folder.st_uid, folder.st_gid)
    os.replace(tmp, path)


class BrokerFiles:
    """The folder the broker reads its device passwords and CRL from."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    def read(self, name: str) -> bytes | None:
        try:
            return (self.directory / name).read_bytes()
        except FileNotFoundError:
            return None

    def identity(self, *names: str) -> tuple[object, ...]:
        """Which files are there now (inode, size, modification time): a replaced or removed
        file shows as a change."""
        found: list[object] = []
        for name in names:
            try:
                st = (self.directory / name).stat()
                found.append((st.st_ino, st.st_size, st.st_mtime_ns))
            except FileNotFoundError:
                found.append(None)
        return tuple(found)

    def write(self, name: str, data: bytes) -> bool:
        """Write the file unless it already holds exactly this; whether it was written."""
        if self.read(name) == data:
            return False
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        _replace_private(self.directory / name, data)
        return True


def password_file(entries: Iterable[tuple[str, str]]) -> bytes:
    """The password file's text: one `user:hash` line per entry."""
    return "".join(f"{user}:{digest}\n" for user, digest in entries).encode()


def reload(pid_file: str | None) -> bool:
    """Ask the broker to re-read its password file and CRL (SIGHUP); False without a pid."""
    if pid_file is None:
        return False
    try:
        pid = int(Path(pid_file).read_text().strip())
        os.kill(pid, signal.SIGHUP)
    except (OSError, ValueError) as exc:
        raise BrokerUnreachable(f"cannot signal the broker ({pid_file}): {exc}") from exc
    return True


def _kick_commands(usernames: Sequence[str]) -> list[dict[str, Any]]:
    commands: list[dict[str, Any]] = []
    for name in usernames:
        commands.append({"command": "createClient", "username": name})
        commands.append({"command": "deleteClient", "username": name})
    return commands


async def control(settings: Settings, commands: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Send dynamic-security commands, batched, as the control account; their responses."""
    if not commands:
        return []
    if settings.mqtt_control_username is None or settings.mqtt_control_password is None:
        raise BrokerUnreachable("FLOWBILL_MQTT_CONTROL_USERNAME/PASSWORD are not set")
    client = aiomqtt.Client(
        settings.mqtt_host,
        settings.mqtt_port,
        username=settings.mqtt_control_username,
        password=settings.mqtt_control_password.get_secret_value(),
        identifier=f"flowbill-devices-{uuid.uuid4().hex[:12]}",
        protocol=aiomqtt.ProtocolVersion.V5,
    )
    batches = [
        list(commands[i : i + COMMANDS_PER_MESSAGE])
        for i in range(0, len(commands), COMMANDS_PER_MESSAGE)
    ]
    responses: list[dict[str, Any]] = []
    try:
        async with client, asyncio.timeout(CONTROL_TIMEOUT_SECONDS):
            await client.subscribe(RESPONSE_TOPIC, qos=1)
            for batch in batches:
                await client.publish(CONTROL_TOPIC, json.dumps({"commands": batch}), qos=1)
            answered = 0
            async for message in client.messages:
                body = json.loads(bytes(message.payload))
                responses += body.get("responses", [])
                answered += 1
                if answered == len(batches):
                    break
    except (aiomqtt.MqttError, TimeoutError) as exc:
        raise BrokerUnreachable(f"dynamic-security control: {exc}") from exc
    return responses


async def kick(settings: Settings, usernames: Sequence[str]) -> None:
    """Drop every connection of these user names: creating and deleting a dynamic-security
    client of a name kicks every connection of that name."""
    for response in await control(settings, _kick_commands(usernames)):
        # "Client already exists" means an earlier kick was cut short; its delete still kicks.
        if response.get("error") and response.get("command") == "deleteClient":
            log.warning("broker kick failed", extra={"error": response["error"]})


SERVICE_ROLE = "flowbill-service"
SERVICE_ACLS = (
    ("subscribePattern", "flowbill/v1/sims/+/usage"),
    ("subscribePattern", "$share/+/flowbill/v1/sims/+/usage"),
    ("publishClientReceive", "flowbill/v1/sims/+/usage"),
    ("publishClientSend", "flowbill/v1/sims/+/coverage"),
)


async def ensure_service_account(settings: Settings) -> None:
    """Give the broker the services' account (`FLOWBILL_MQTT_USERNAME`) and its role when it
    has none: a broker on a new volume. An existing account is left alone (changing its
    password would drop every service's connection): rotate it with `mosquitto_ctrl`."""
    if settings.mqtt_username is None or settings.mqtt_password is None:
        return
    acls = [{"acltype": kind, "topic": topic, "allow": True} for kind, topic in SERVICE_ACLS]
    commands = [
        {"command": "createRole", "rolename": SERVICE_ROLE, "acls": acls},
        {
            "command": "createClient",
            "username": settings.mqtt_username,
            "password": settings.mqtt_password.get_secret_value(),
            "roles": [{"rolename": SERVICE_ROLE}],
        },
    ]
    for response in await control(settings, commands):
        error = response.get("error")
        if error and "already exists" not in str(error):
            raise BrokerUnreachable(f"{response.get('command')}: {error}")
