"""The API's long-lived broker connection: readiness now, coverage publishing later."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import aiomqtt
import stamina

from flowbill.settings import Settings
from ingest import mqtt_session

log = logging.getLogger(__name__)


class BrokerLink:
    """Keeps one MQTT connection up in the background, reconnecting when it drops."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._client: aiomqtt.Client | None = None
        self._task: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._maintain(), name="api-broker-link")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def publish(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False
    ) -> None:
        """Publish on the live connection; raises aiomqtt.MqttError when there is none."""
        if self._client is None or not self.connected:
            raise aiomqtt.MqttError("not connected to the broker")
        await self._client.publish(topic, payload, qos=qos, retain=retain)

    async def _maintain(self) -> None:
        # Reconnect for as long as the API runs (no limit on attempts: readiness reports the
        # link as down meanwhile), with jittered exponential backoff bounded at 10 s, so that
        # API processes restarted together do not reconnect in step.
        while True:
            async for attempt in stamina.retry_context(
                on=aiomqtt.MqttError,
                attempts=None,
                timeout=None,
                wait_initial=0.5,
                wait_max=10.0,
                wait_jitter=1.0,
            ):
                with attempt:
                    await self._connection()
            # A connection that ended cleanly starts over with a short wait.
            await asyncio.sleep(0.5)

    async def _connection(self) -> None:
        try:
            async with mqtt_session.broker_client(self._settings) as client:
                self._client = client
                self._connected.set()
                # No subscriptions: iterating only notices a lost connection.
                async for _ in client.messages:
                    pass
        except aiomqtt.MqttError as exc:
            log.warning("API broker link down", extra={"error": str(exc)})
            raise
        finally:
            self._connected.clear()
            self._client = None
