"""Coverage back to the vehicle: a retained MQTT message per SIM saying who pays for each app
now, and which apps are blocked because no policy covers them and the wallet is empty.

The state is computed from the same rules and spend as the allocation run, stored per SIM,
and published when it changes; a message that could not be published (broker down) stays
marked unpublished and goes out on a later refresh.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any
from uuid import UUID

from billing.allocation import repository
from flowbill import metrics
from flowbill.db import Connection
from flowbill.periods import Calendar
from iot_cards.service import cards as iot_cards
from sponsors import catalogue
from sponsors import service as sponsors
from sponsors.allocation import Budget, PolicyBook, Spend, coverage
from wallet import reports as wallet_reports

log = logging.getLogger(__name__)

TOPIC = "flowbill/v1/sims/{iccid}/coverage"
VERSION = 1

Publish = Callable[[str, bytes], Awaitable[None]]


def topic(iccid: str) -> str:
    return TOPIC.format(iccid=iccid)


async def compute(
    conn: Connection,
    iccids: list[str],
    *,
    book: PolicyBook,
    budgets: dict[int, Budget],
    calendar: Calendar,
    now: datetime,
) -> dict[str, dict[str, Any]]:
    """The coverage of each SIM fitted to a vehicle or sold as an IoT card; a SIM that was
    told its coverage once and is neither any more (taken out of its vehicle) is told that
    nobody pays; others are absent."""
    sims = await sponsors.sim_views(conn, iccids)
    states = await _cards(conn, [i for i in iccids if i not in sims])
    states |= await _left_their_vehicle(
        conn, [i for i in iccids if i not in sims and i not in states]
    )
    if not sims:
        return states
    apps = await catalogue.catalogue_apps(conn)
    period = calendar.period_of(now)
    automakers = {s.automaker_id for s in sims.values()}
    policy_ids = sorted(
        h[0].policy_id for h in book.histories if any(t.scope.automaker_id in automakers for t in h)
    )
    used = await sponsors.spend_of(conn, policy_ids)
    drivers = sorted({str(s.driver_id) for s in sims.values() if s.driver_id is not None})
    balances = await wallet_reports.spendable(conn, users=drivers, now=now)
    spend = Spend(
        cap_used=await sponsors.caps_used(conn, policy_ids, [period], sorted(sims)),
        budgets={pid: budgets[pid] for pid in policy_ids if pid in budgets},
        used_bytes={pid: u[0] for pid, u in used.items()},
        used_money={pid: u[1] for pid, u in used.items()},
        wallets={UUID(d): b for d, b in balances.items()},
    )
    for iccid, sim in sims.items():
        per_app = coverage(
            sim, apps, candidates=book.candidates, spend=spend, period=period, now=now
        )
        wallet_has_data = sim.driver_id is not None and spend.wallets.get(sim.driver_id, 0) > 0
        payload: dict[str, Any] = {
            "v": VERSION,
            "iccid": iccid,
            "apps": {
                app: (
                    {"payer": "sponsor", "sponsor_id": str(c.sponsor_id), "policy_id": c.policy_id}
                    if c.payer_kind == "sponsor"
                    else {"payer": c.payer_kind}
                )
                for app, c in sorted(per_app.items())
            },
            "other_apps": {"payer": "wallet" if wallet_has_data else "blocked"},
            "blocked": sorted(a for a, c in per_app.items() if c.payer_kind == "blocked"),
            "wallet_has_data": wallet_has_data,
        }
        if sim.driver_id is None:
            payload.pop("wallet_has_data")
        states[iccid] = payload
    return states


async def _left_their_vehicle(conn: Connection, iccids: list[str]) -> dict[str, dict[str, Any]]:
    """SIMs taken out of their vehicle (refitted, or their owner changed): no policy and no
    wallet pays any more. Only SIMs that were sent a coverage before are told."""
    if not iccids:
        return {}
    told = await repository.coverage_payloads(conn, iccids)
    return {
        iccid: {
            "v": VERSION,
            "iccid": iccid,
            "apps": {},
            "blocked": [],
            "other_apps": {"payer": "blocked", "reason": "not_fitted"},
        }
        for iccid in sorted(told)
    }


async def _cards(conn: Connection, iccids: list[str]) -> dict[str, dict[str, Any]]:
    """IoT cards: their plan pays every app, unless the card is blocked (quota used up, IMEI
    mismatch, suspended …): then nothing may use data, and the reason says why."""
    states: dict[str, dict[str, Any]] = {}
    if not iccids:
        return states
    for iccid, reason in (await iot_cards.card_blocks(conn, iccids)).items():
        payer = {"payer": "plan"} if reason is None else {"payer": "blocked", "reason": reason}
        states[iccid] = {"v": VERSION, "iccid": iccid, "apps": {}, "other_apps": payer,
                         "blocked": []}  # fmt: skip
    return states


async def store(conn: Connection, states: dict[str, dict[str, Any]]) -> int:
    """Keep the states that differ from what was last stored; returns how many changed."""
    stored = await repository.coverage_payloads(conn, sorted(states))
    changed = [
        (iccid, json.dumps(state, sort_keys=True))
        for iccid, state in sorted(states.items())
        if iccid not in stored or json.loads(stored[iccid][0]) != state
    ]
    await repository.save_coverage(conn, changed)
    return len(changed)


async def publish_pending(
    conn: Connection, publish: Publish, *, now: datetime, limit: int = 5000
) -> int:
    """Publish (retained) the stored states not yet published; returns how many went out."""
    pending = await repository.unpublished_coverage(conn, limit=limit)
    sent = []
    for iccid, payload in pending:
        message = json.loads(payload)
        message["as_of"] = now.isoformat()
        await publish(topic(iccid), json.dumps(message, sort_keys=True).encode())
        sent.append((iccid, payload))
    await repository.mark_published(conn, sent)
    metrics.COVERAGE_PUBLISHED.inc(len(sent))
    metrics.COVERAGE_BLOCKED_APPS.set(await repository.sims_with_blocked_apps(conn))
    return len(sent)


async def wallet_changes(conn: Connection, *, now: datetime) -> list[str]:
    """SIMs whose driver's wallet went from empty to holding data, or the other way, since
    their coverage was last computed (a refill unblocks, a redemption may block)."""
    known = dict(await repository.sims_with_wallet_state(conn))
    if not known:
        return []
    sims = await sponsors.sim_views(conn, sorted(known))
    drivers = sorted({str(s.driver_id) for s in sims.values() if s.driver_id is not None})
    balances = await wallet_reports.spendable(conn, users=drivers, now=now)
    return sorted(
        iccid
        for iccid, sim in sims.items()
        if sim.driver_id is not None and (balances.get(str(sim.driver_id), 0) > 0) != known[iccid]
    )


async def current(conn: Connection, iccid: str) -> dict[str, Any] | None:
    """The coverage last computed for a SIM."""
    found = await repository.coverage_of(conn, iccid)
    return None if found is None else dict(json.loads(found))
