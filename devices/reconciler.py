"""Brings the broker in line with the database's device credentials, and keeps it there.

Each pass renders the password file and the CRL from the database. When either changed, it
writes them (atomically), makes the broker re-read them, and drops the connections of the
devices that lost a credential. The first pass after a start also re-signs the CRL and
drops the connections of certificates refused in the last day, whatever an earlier run did
or did not finish. A pass is cheap when nothing changed: one small query.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from devices import repository
from devices.broker import (
    CRL,
    PASSWORDS,
    BrokerFiles,
    BrokerUnreachable,
    ensure_service_account,
    kick,
    password_file,
)
from devices.broker import reload as reload_broker
from devices.ca import DeviceCa, RevokedSerial
from flowbill import db
from flowbill.db import Connection
from flowbill.settings import Settings

log = logging.getLogger(__name__)

CRL_VALID_FOR = timedelta(days=7)
CRL_RESIGN_AFTER = timedelta(days=1)
_FIRST_PASS_KICKS = timedelta(days=1)


@dataclass
class Applied:
    """What the broker was last given."""

    mark: tuple[object, ...] | None = None
    files: tuple[object, ...] | None = None  # the files' identity as written
    passwords: dict[str, str] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)  # serial -> ICCID
    crl_signed_at: datetime | None = None
    reload_pending: bool = False


@dataclass(frozen=True)
class PassResult:
    changed: bool
    kicked: list[str]


async def reconcile_once(
    conn: Connection,
    settings: Settings,
    ca: DeviceCa | None,
    applied: Applied,
    *,
    now: datetime,
) -> PassResult:
    """One pass; `applied` records what the broker has been given, step by step, so that a
    pass cut short (the broker unreachable) is finished by the next one."""
    if settings.device_broker_dir is None:
        raise BrokerUnreachable("FLOWBILL_DEVICE_BROKER_DIR is not set")
    files = BrokerFiles(settings.device_broker_dir)
    mark = await repository.state_mark(conn, now=now)
    first = applied.mark is None
    crl_due = ca is not None and (
        applied.crl_signed_at is None or now - applied.crl_signed_at > CRL_RESIGN_AFTER
    )
    # Files replaced or removed behind our back (a new broker, a restored volume) are
    # written again, whatever the database says.
    untouched = applied.files == files.identity(PASSWORDS, CRL)
    if mark == applied.mark and untouched and not crl_due and not applied.reload_pending:
        return PassResult(changed=False, kicked=[])
    passwords = dict(await repository.live_passwords(conn, now=now))
    refused_rows = await repository.refused_certificates(conn, now=now)
    refused = {serial: iccid for iccid, serial, _ in refused_rows}
    changed = files.write(PASSWORDS, password_file(sorted(passwords.items())))
    if ca is not None and (crl_due or not untouched or refused.keys() != applied.refused.keys()):
        crl = ca.crl(
            [RevokedSerial(serial, since) for _, serial, since in refused_rows],
            now=now, valid_for=CRL_VALID_FOR,
        )  # fmt: skip
        changed = files.write(CRL, crl) or changed
        applied.crl_signed_at = now
    applied.files = files.identity(PASSWORDS, CRL)
    if changed or applied.reload_pending:
        applied.reload_pending = True
        reload_broker(settings.mqtt_broker_pid_file)
        applied.reload_pending = False
    # A password device whose password went is dropped by the reload itself; certificate
    # devices are dropped by name (and then refused by the CRL at their next handshake).
    lost = {iccid for serial, iccid in refused.items() if serial not in applied.refused}
    if first:
        lost = {iccid for iccid, _, since in refused_rows if since > now - _FIRST_PASS_KICKS}
    lost |= {i for i in applied.passwords if passwords.get(i) != applied.passwords[i]}
    kicked = sorted(lost)
    await kick(settings, kicked)
    applied.mark, applied.passwords, applied.refused = mark, passwords, refused
    if changed or kicked:
        log.info(
            "device identities applied to the broker",
            extra={"passwords": len(passwords), "refused_certificates": len(refused),
                   "kicked": len(kicked)},
        )  # fmt: skip
    return PassResult(changed=changed, kicked=kicked)


async def run(settings: Settings, *, once: bool = False) -> None:
    """Reconcile every `device_reconcile_interval_seconds` until cancelled."""
    ca = DeviceCa.load(settings.device_ca_dir) if settings.device_ca_dir else None
    applied = Applied()
    account_ready = False
    conn = await db.connect(settings, application_name="flowbill-devices")
    await conn.set_autocommit(True)
    try:
        while True:
            try:
                # The files first: a new broker waits for them before it starts.
                await reconcile_once(conn, settings, ca, applied, now=datetime.now(UTC))
                if not account_ready:
                    await ensure_service_account(settings)
                    account_ready = True
            except BrokerUnreachable as exc:
                # What was not done is done by the next pass, from the same state.
                log.warning("device reconciler: broker unreachable", extra={"error": str(exc)})
            if once:
                return
            await asyncio.sleep(settings.device_reconcile_interval_seconds)
    finally:
        await conn.close()
