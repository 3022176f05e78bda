"""What a driver's page shows of a SIM's month: bytes per app and per day, stacked by payer
(each sponsor by name, and "me": the wallet plus overage). Read from the daily rollup the
allocation run keeps (allocation_daily), never from the allocation rows themselves, so a
month of one-minute reports costs a few hundred rows."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from uuid import UUID

from billing.allocation import repository
from flowbill import periods
from flowbill.db import Connection
from tenants import service as tenants
from tenants.errors import TenantNotFound

ME = "me"


@dataclass(frozen=True, slots=True)
class Payer:
    """One layer of the stacks: a sponsor (key `sponsor:<id>`) or the driver (`me`)."""

    key: str
    kind: str
    name: str | None


@dataclass(slots=True)
class UsageLine:
    """Bytes of one app (or one day), in total and per payer key."""

    label: str
    total: int = 0
    by_payer: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class SimMonth:
    iccid: str
    month: date
    payers: list[Payer]
    apps: list[UsageLine]
    days: list[UsageLine]
    total: int
    wallet_bytes: int
    overage_bytes: int


def month_days(month: date) -> list[date]:
    """Every calendar day of the month that starts on `month`."""
    following = periods.next_month(month)
    return [month + timedelta(days=n) for n in range((following - month).days)]


async def _sponsor_names(conn: Connection, ids: set[UUID]) -> dict[UUID, str]:
    names = {}
    for sponsor_id in sorted(ids):
        try:
            names[sponsor_id] = (await tenants.get_tenant(conn, sponsor_id)).name
        except TenantNotFound:
            names[sponsor_id] = str(sponsor_id)
    return names


async def sim_months(conn: Connection, iccids: Sequence[str], *, month: date) -> list[SimMonth]:
    """Each SIM's usage in a month (days in the billing time zone), by app and by day."""
    days = month_days(month)
    rows = await repository.daily_usage(
        conn, iccids, first_day=days[0], end_day=days[-1] + timedelta(days=1)
    )
    names = await _sponsor_names(
        conn, {r.payer_id for r in rows if r.payer_kind == "sponsor" and r.payer_id}
    )
    per_sim: dict[str, list[repository.DailyUsageRow]] = defaultdict(list)
    for row in rows:
        per_sim[row.iccid].append(row)
    return [_sim_month(iccid, month, days, per_sim.get(iccid, []), names) for iccid in iccids]


def _sim_month(
    iccid: str,
    month: date,
    days: list[date],
    rows: list[repository.DailyUsageRow],
    names: dict[UUID, str],
) -> SimMonth:
    apps: dict[str, UsageLine] = {}
    per_day = {d: UsageLine(d.isoformat()) for d in days}
    payers: dict[str, Payer] = {}
    wallet = overage = 0
    for row in rows:
        if row.payer_kind == "sponsor" and row.payer_id is not None:
            key = f"sponsor:{row.payer_id}"
            payers.setdefault(key, Payer(key, "sponsor", names.get(row.payer_id)))
        else:
            key = ME
            payers.setdefault(key, Payer(ME, ME, None))
            if row.payer_kind == "wallet":
                wallet += row.bytes
            else:
                overage += row.bytes
        for line in (apps.setdefault(row.app, UsageLine(row.app)), per_day[row.day]):
            line.total += row.bytes
            line.by_payer[key] = line.by_payer.get(key, 0) + row.bytes
    # Sponsors by name, then the driver: the same order in every chart and table.
    ordered = sorted(payers.values(), key=lambda p: (p.kind == ME, (p.name or "").lower(), p.key))
    return SimMonth(
        iccid=iccid,
        month=month,
        payers=ordered,
        apps=sorted(apps.values(), key=lambda a: (-a.total, a.label)),
        days=list(per_day.values()),
        total=sum(a.total for a in apps.values()),
        wallet_bytes=wallet,
        overage_bytes=overage,
    )
