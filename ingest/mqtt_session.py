"""The broker session of an ingest worker: persistent, flow-controlled, acknowledged by hand.

aiomqtt 2.x acknowledges QoS 1 messages as soon as they arrive. We acknowledge only after
the batch holding a message is committed, through paho's manual-ack switch. That reaches
into aiomqtt's paho client, so it lives here alone: moving to an aiomqtt with a public
manual-ack call changes this file only.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from flowbill.settings import Settings


def _tls_context(settings: Settings) -> ssl.SSLContext | None:
    if not settings.mqtt_tls:
        return None
    return ssl.create_default_context(cafile=settings.mqtt_ca_file)


def broker_client(
    settings: Settings,
    *,
    identifier: str | None = None,
    persistent: bool = False,
    manual_ack: bool = False,
    receive_maximum: int | None = None,
    max_inflight: int | None = None,
) -> aiomqtt.Client:
    """An MQTT v5 client for our broker, configured from settings. `max_inflight`: how many
    QoS 1 messages it publishes before it waits for acknowledgements (paho's default: 20)."""
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    if persistent:
        properties.SessionExpiryInterval = settings.ingest_session_expiry_seconds
    if receive_maximum is not None:
        # The broker keeps at most this many unacknowledged QoS 1 messages in flight to us.
        properties.ReceiveMaximum = receive_maximum
    client = aiomqtt.Client(
        settings.mqtt_host,
        settings.mqtt_port,
        username=settings.mqtt_username,
        password=(settings.mqtt_password.get_secret_value() if settings.mqtt_password else None),
        identifier=identifier,
        protocol=aiomqtt.ProtocolVersion.V5,
        clean_start=not persistent,
        properties=properties,
        tls_context=_tls_context(settings),
        keepalive=30,
        max_inflight_messages=max_inflight,
    )
    if manual_ack:
        client._client.manual_ack_set(True)
    return client


def acknowledge(client: aiomqtt.Client, *, mid: int, qos: int) -> None:
    """Send the PUBACK for a message received on a manual-ack client."""
    if qos > 0:
        client._client.ack(mid, qos)


async def receive_bursts(client: aiomqtt.Client) -> AsyncIterator[list[aiomqtt.Message]]:
    """Messages as they arrive, in bursts: every message already queued is taken at once.

    aiomqtt's iterator schedules a task per message; taking the queued ones together saves
    most of that on a busy subscription. Raises aiomqtt.MqttError when the connection drops.
    """
    queue = client._queue
    async for first in client.messages:
        burst = [first]
        while not queue.empty():
            burst.append(queue.get_nowait())
        yield burst


async def end_session(settings: Settings, *, identifier: str) -> None:
    """Discard a worker's persistent session, and with it its subscription and queue.

    For a worker that is retired for good: otherwise the broker keeps queueing that
    worker's share of the reports for a session nobody will resume.
    """
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    properties.SessionExpiryInterval = 0
    client = aiomqtt.Client(
        settings.mqtt_host,
        settings.mqtt_port,
        username=settings.mqtt_username,
        password=settings.mqtt_password.get_secret_value() if settings.mqtt_password else None,
        identifier=identifier,
        protocol=aiomqtt.ProtocolVersion.V5,
        clean_start=True,
        properties=properties,
        tls_context=_tls_context(settings),
    )
    async with client:
        pass
