"""The broker session of an ingest worker: persistent, flow-controlled, acknowledged by hand.

aiomqtt 2.x acknowledges QoS 1 messages as soon as they arrive. We acknowledge only after
the batch holding a message is committed, through paho's manual-ack switch. aiomqtt also
reads the socket whenever it is readable, whatever the reader holds: `ReadGate` stops and
restarts that reading, so that a full worker leaves the rest with the broker. Both reach
into aiomqtt's paho client, so they live here alone: moving to an aiomqtt with public
calls for them changes this file only.
"""

from __future__ import annotations

import asyncio
import socket
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


class ReadGate:
    """Stops and restarts reading a connected client's socket.

    Closed, nothing more is read (not even a QoS 0 message, which the Receive Maximum does
    not limit): the broker keeps what is queued for us, and TCP pushes back on it.
    Writing goes on, so acknowledgements still leave. While closed for longer than about
    twice the keepalive, paho sees no ping answer and drops the connection; the worker then
    reconnects, and the broker resends what was not acknowledged.
    """

    def __init__(self, client: aiomqtt.Client) -> None:
        self._client = client
        self._closed_on: socket.socket | None = None

    @property
    def closed(self) -> bool:
        return self._closed_on is not None

    def close(self) -> None:
        """Stop reading the socket (no-op when closed or not connected)."""
        sock = self._socket()
        if self._closed_on is not None or sock is None:
            return
        asyncio.get_running_loop().remove_reader(sock.fileno())
        self._closed_on = sock

    def open(self) -> None:
        """Read the socket again, unless the connection it was closed on is gone."""
        sock, self._closed_on = self._closed_on, None
        if sock is None or sock is not self._socket() or sock.fileno() < 0:
            return
        asyncio.get_running_loop().add_reader(sock.fileno(), self._read)

    def _socket(self) -> socket.socket | None:
        sock = self._client._client.socket()
        return sock if isinstance(sock, socket.socket) else None

    def _read(self) -> None:
        # What aiomqtt's own reader does (aiomqtt.Client._on_socket_open).
        paho = self._client._client
        try:
            while True:
                paho.loop_read()
                pending = getattr(paho.socket(), "pending", None)
                if pending is None or pending() <= 0:
                    break
        except Exception as exc:  # a broken connection: the message iterator raises
            disconnected = self._client._disconnected
            if not disconnected.done():
                disconnected.set_exception(exc)


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
