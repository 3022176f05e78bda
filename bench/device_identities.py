"""Device identity benchmark: identities provisioned per second for a fleet, and how long a
revocation takes to take effect at the broker.

Provisioning: SIMs provisioned and their device identities issued in the same transaction,
10,000 SIMs at a time (the largest `POST /v1/operator/sims`), through the service layer the
API calls: a share of certificates (a key pair made here and the certificate signed by the
device CA) and the rest passwords (a 256-bit secret and the broker's hash). Then one
reconciler pass gives the broker the password file and CRL and makes it re-read them. The
clock stops when sample devices of both kinds are accepted by the broker over TLS: the fleet
is working.

Revocation: with `flowbill devices reconcile`'s loop running (at its default interval), a
connected device is revoked (the transaction commits) and the clock runs until the broker has
dropped its connection and refuses a new one; for certificate and password devices in turn.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import statistics
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiomqtt
from throwaway_stack import fresh_stack, machine

from devices import service as devices
from devices.ca import DeviceCa
from devices.reconciler import Applied, reconcile_once
from devices.reconciler import run as run_reconciler
from devices.schemas import DeviceCredentialIssued
from devstack import localstack
from flowbill import db
from flowbill.settings import Settings
from ingest import service as metering
from ingest.protocol import iccid_check_digit
from simulator.fleet.identities import (
    DeviceIdentity,
    DeviceListeners,
    device_client,
    identities_from,
    tls_context,
)

REPO = Path(__file__).resolve().parent.parent
PER_TRANSACTION = 10_000
SAMPLE = 20
TARGET_SECONDS = 300.0
REVOCATION_TARGET_SECONDS = 5.0


def iccid_for(n: int) -> str:
    body = f"8986077{n:012d}"
    return body + iccid_check_digit(body)


def _listeners(settings: Settings, folder: Path) -> DeviceListeners:
    assert settings.mqtt_tls_port
    assert settings.mqtt_tls_password_port
    assert settings.device_ca_file
    return DeviceListeners(
        host=settings.mqtt_host, certificate_port=settings.mqtt_tls_port,
        password_port=settings.mqtt_tls_password_port, ca_file=settings.device_ca_file,
        folder=folder,
    )  # fmt: skip


def _connect_packet(identity: DeviceIdentity) -> bytes:
    """An MQTT 3.1.1 CONNECT: a clean session, no client id, the password if it has one."""

    def text(value: str) -> bytes:
        raw = value.encode()
        return len(raw).to_bytes(2, "big") + raw

    flags, payload = 0x02, text("")
    if identity.password is not None:
        flags |= 0xC0
        payload += text(identity.iccid) + text(identity.password)
    body = text("MQTT") + bytes([4, flags, 0, 60]) + payload
    assert len(body) < 128
    return bytes([0x10, len(body)]) + body


async def _accepted(listeners: DeviceListeners, identity: DeviceIdentity) -> bool:
    """Whether the broker accepts the device now: a CONNACK of 0 to a bare CONNECT (a client
    library would wait for its own timeout when the broker closes the TLS session)."""
    context = tls_context(listeners, identity)
    port = listeners.certificate_port if identity.kind == "certificate" else listeners.password_port
    try:
        async with asyncio.timeout(10):
            reader, writer = await asyncio.open_connection(
                listeners.host, port, ssl=context, server_hostname=listeners.host
            )
            try:
                writer.write(_connect_packet(identity))
                await writer.drain()
                connack = await reader.readexactly(4)
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
    except (OSError, asyncio.IncompleteReadError):
        return False
    return connack == b"\x20\x02\x00\x00"


async def _until(listeners: DeviceListeners, identity: DeviceIdentity, *, accepted: bool) -> None:
    deadline = time.monotonic() + 60
    while True:
        if await _accepted(listeners, identity) == accepted:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{identity.iccid} never {'accepted' if accepted else 'refused'}")
        await asyncio.sleep(0.05)


async def provision(
    settings: Settings, issuer: devices.Issuer, *, sims: int, certificate_share: float
) -> tuple[float, dict[str, DeviceIdentity], float]:
    """Provision the fleet with its identities; (seconds in the database, samples, seconds
    of the reconciler pass)."""
    iccids = [iccid_for(n) for n in range(sims)]
    rng = random.Random(7)
    samples: list[DeviceCredentialIssued] = []
    conn = await db.connect(settings, application_name="bench-devices")
    try:
        started = time.perf_counter()
        for first in range(0, sims, PER_TRANSACTION):
            chunk = iccids[first : first + PER_TRANSACTION]
            cut = round(len(chunk) * certificate_share)
            now = datetime.now(UTC)
            async with conn.transaction():
                await metering.provision_sims(conn, chunk, label="bench fleet")
                issued = await devices.issue_many(
                    conn, issuer, chunk[:cut], kind="certificate", now=now
                )
                issued += await devices.issue_many(
                    conn, issuer, chunk[cut:], kind="password", now=now
                )
            for kind in ("certificate", "password"):
                of_kind = [i for i in issued if i.kind == kind]
                samples += rng.sample(of_kind, min(SAMPLE // 2, len(of_kind)))
            print(f"  {first + len(chunk):,} identities issued", flush=True)
        issued_seconds = time.perf_counter() - started
        await conn.set_autocommit(True)
        started = time.perf_counter()
        await reconcile_once(conn, settings, issuer.ca, Applied(), now=datetime.now(UTC))
        pass_seconds = time.perf_counter() - started
    finally:
        await conn.close()
    return issued_seconds, identities_from([s.model_dump() for s in samples]), pass_seconds


async def _hold(listeners: DeviceListeners, identity: DeviceIdentity, up: asyncio.Event) -> None:
    """Stay connected until the broker drops the connection."""
    with contextlib.suppress(aiomqtt.MqttError):
        async with device_client(listeners, identity, in_flight=1) as client:
            await client.subscribe(f"flowbill/v1/sims/{identity.iccid}/coverage", qos=1)
            up.set()
            async for _ in client.messages:
                pass


async def revocation(
    settings: Settings, listeners: DeviceListeners, identity: DeviceIdentity
) -> float:
    """Seconds from the revocation's commit until the device's connection is dropped and a
    new one refused."""
    up = asyncio.Event()
    holder = asyncio.create_task(_hold(listeners, identity, up))
    await asyncio.wait_for(up.wait(), 10)
    conn = await db.connect(settings, application_name="bench-devices")
    try:
        async with conn.transaction():
            await devices.revoke(conn, iccid=identity.iccid, owner_id=None, now=datetime.now(UTC))
    finally:
        await conn.close()
    started = time.perf_counter()
    await asyncio.wait_for(holder, 30)
    await _until(listeners, identity, accepted=False)
    return time.perf_counter() - started


async def main(args: argparse.Namespace) -> None:
    state = REPO / ".state" / "bench-devices"
    settings = fresh_stack(state)
    try:
        print(machine())
        assert settings.device_ca_dir is not None
        issuer = devices.Issuer(
            ca=DeviceCa.load(settings.device_ca_dir), certificate_days=730,
            rotation_overlap=timedelta(days=7),
        )  # fmt: skip
        listeners = _listeners(settings, state / "bench-device-keys")
        print(f"fleet: {args.sims:,} SIMs, {args.certificates:.0%} with certificates,"
              f" the rest passwords; {PER_TRANSACTION:,} SIMs per transaction")  # fmt: skip
        started = time.perf_counter()
        issued_seconds, samples, pass_seconds = await provision(
            settings, issuer, sims=args.sims, certificate_share=args.certificates
        )
        for identity in samples.values():
            await _until(listeners, identity, accepted=True)
        total = time.perf_counter() - started
        print(f"issued and stored: {issued_seconds:,.1f} s"
              f" ({args.sims / issued_seconds:,.0f} identities/s)")  # fmt: skip
        print(f"reconciler pass (password file, CRL, reload): {pass_seconds:,.2f} s")
        kinds = ", ".join(sorted({i.kind for i in samples.values()}))
        verdict = "yes" if total < TARGET_SECONDS else "NO"
        print(f"fleet working ({len(samples)} sampled devices of {kinds} accepted over TLS):"
              f" {total:,.1f} s = {args.sims / total:,.0f} identities/s;"
              f" target {TARGET_SECONDS:.0f} s: {verdict}")  # fmt: skip
        loop = asyncio.create_task(run_reconciler(settings))
        try:
            # Its first pass (a fresh start) must be over before revocations are timed.
            await asyncio.sleep(2 * settings.device_reconcile_interval_seconds + 1)
            for kind in ("certificate", "password"):
                chosen = [i for i in samples.values() if i.kind == kind][: args.revocations]
                times = [await revocation(settings, listeners, i) for i in chosen]
                if times:
                    verdict = "yes" if max(times) < REVOCATION_TARGET_SECONDS else "NO"
                    print(f"revocation of a {kind} device, dropped and refused:"
                          f" median {statistics.median(times):.2f} s, worst {max(times):.2f} s"
                          f" ({len(times)} runs; reconciler every"
                          f" {settings.device_reconcile_interval_seconds} s);"
                          f" target {REVOCATION_TARGET_SECONDS:.0f} s: {verdict}")  # fmt: skip
        finally:
            loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loop
    finally:
        localstack.down(state)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sims", type=int, default=100_000)
    parser.add_argument(
        "--certificates", type=float, default=0.8, help="share of certificate devices"
    )
    parser.add_argument("--revocations", type=int, default=5, help="revocations timed per kind")
    asyncio.run(main(parser.parse_args()))
