"""SQL of sponsors: the app catalogue, vehicles and SIMs, partnerships, policies, spend."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from uuid import UUID

from psycopg.rows import class_row

from flowbill.db import Connection

# --- Vehicles and SIMs -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VehicleRow:
    vin: str
    automaker_id: UUID
    model: str
    fleet: str | None
    driver_id: UUID | None
    invited_driver_id: UUID | None
    iccids: list[str]
    updated_at: datetime


# `driver_id` is the driver of the accepted, current link; `invited_driver_id` the one whose
# invitation is pending.
_VEHICLE = """
    SELECT v.vin, v.automaker_id, v.model, v.fleet, v.driver_id,
           (SELECT d.driver_id FROM vehicle_drivers d
             WHERE d.vin = v.vin AND d.accepted_at IS NULL AND d.declined_at IS NULL
               AND d.ended_at IS NULL) AS invited_driver_id,
           coalesce(array_agg(s.iccid ORDER BY s.iccid) FILTER (WHERE s.iccid IS NOT NULL),
                    '{}') AS iccids,
           v.updated_at
    FROM vehicles v LEFT JOIN vehicle_sims s USING (vin)
"""


async def vehicle(conn: Connection, vin: str, *, for_update: bool = False) -> VehicleRow | None:
    if for_update:
        await conn.execute("SELECT 1 FROM vehicles WHERE vin = %s FOR UPDATE", (vin,))
    async with conn.cursor(row_factory=class_row(VehicleRow)) as cur:
        await cur.execute(_VEHICLE + " WHERE v.vin = %s GROUP BY v.vin", (vin,))
        return await cur.fetchone()


async def vehicles_of(
    conn: Connection, automaker_id: UUID, *, after: str | None, limit: int
) -> list[VehicleRow]:
    async with conn.cursor(row_factory=class_row(VehicleRow)) as cur:
        await cur.execute(
            _VEHICLE + " WHERE v.automaker_id = %s AND v.vin > %s GROUP BY v.vin"
            " ORDER BY v.vin LIMIT %s",
            (automaker_id, after or "", limit),
        )
        return await cur.fetchall()


async def vehicles_of_driver(
    conn: Connection, driver_id: UUID, *, after: str | None = None, limit: int | None = None
) -> list[VehicleRow]:
    """The driver's vehicles by VIN: all of them, or `limit` after the VIN `after`."""
    async with conn.cursor(row_factory=class_row(VehicleRow)) as cur:
        await cur.execute(
            _VEHICLE + " WHERE v.driver_id = %s AND v.vin > %s GROUP BY v.vin"
            " ORDER BY v.vin LIMIT %s",
            (driver_id, after or "", limit),
        )
        return await cur.fetchall()


async def upsert_vehicle(
    conn: Connection,
    *,
    vin: str,
    automaker_id: UUID,
    model: str,
    fleet: str | None,
) -> UUID:
    """Insert or update the vehicle (locking it); returns its automaker (which an update never
    changes). The driver is not set here: only an accepted invitation sets it."""
    cur = await conn.execute(
        """INSERT INTO vehicles AS v (vin, automaker_id, model, fleet)
           VALUES (%s, %s, %s, %s)
           ON CONFLICT (vin) DO UPDATE
           SET model = excluded.model, fleet = excluded.fleet, updated_at = now()
           WHERE v.automaker_id = excluded.automaker_id
           RETURNING automaker_id""",
        (vin, automaker_id, model, fleet),
    )
    row = await cur.fetchone()
    if row is None:
        owner = await conn.execute("SELECT automaker_id FROM vehicles WHERE vin = %s", (vin,))
        found = await owner.fetchone()
        assert found is not None
        owner_id: UUID = found[0]
        return owner_id
    automaker: UUID = row[0]
    return automaker


async def sims_fitted_elsewhere(conn: Connection, vin: str, iccids: Sequence[str]) -> list[str]:
    cur = await conn.execute(
        "SELECT iccid FROM vehicle_sims WHERE iccid = ANY(%s) AND vin <> %s ORDER BY iccid",
        (list(iccids), vin),
    )
    return [r[0] for r in await cur.fetchall()]


async def fit_sims(conn: Connection, vin: str, iccids: Sequence[str]) -> list[str]:
    """Make the vehicle's SIMs exactly `iccids`; returns the SIMs whose vehicle changed."""
    removed = await conn.execute(
        "DELETE FROM vehicle_sims WHERE vin = %s AND NOT (iccid = ANY(%s)) RETURNING iccid",
        (vin, list(iccids)),
    )
    changed = [r[0] for r in await removed.fetchall()]
    added = await conn.execute(
        """INSERT INTO vehicle_sims (iccid, vin) SELECT unnest(%s::text[]), %s
           ON CONFLICT (iccid) DO NOTHING RETURNING iccid""",
        (list(iccids), vin),
    )
    changed += [r[0] for r in await added.fetchall()]
    return changed


@dataclass(frozen=True, slots=True)
class SimRow:
    iccid: str
    vin: str
    automaker_id: UUID
    model: str
    fleet: str | None
    driver_id: UUID | None


# `vehicles.driver_id` is the driver of the accepted, current link (see `ownership`).
_SIM = """
    SELECT s.iccid, s.vin, v.automaker_id, v.model, v.fleet, v.driver_id
    FROM vehicle_sims s JOIN vehicles v USING (vin)
"""


async def sims(conn: Connection, iccids: Sequence[str]) -> list[SimRow]:
    async with conn.cursor(row_factory=class_row(SimRow)) as cur:
        await cur.execute(_SIM + " WHERE s.iccid = ANY(%s)", (list(iccids),))
        return await cur.fetchall()


async def sims_of(
    conn: Connection, automaker_id: UUID, *, after: str | None, limit: int
) -> list[SimRow]:
    async with conn.cursor(row_factory=class_row(SimRow)) as cur:
        await cur.execute(
            _SIM + " WHERE v.automaker_id = %s AND s.iccid > %s ORDER BY s.iccid LIMIT %s",
            (automaker_id, after or "", limit),
        )
        return await cur.fetchall()


async def sims_in_scope(
    conn: Connection,
    *,
    automaker_id: UUID,
    model: str | None,
    fleet: str | None,
    iccids: Sequence[str],
) -> list[str]:
    """The fitted SIMs a scope covers (all of the automaker's when nothing narrows it)."""
    cur = await conn.execute(
        """SELECT s.iccid FROM vehicle_sims s JOIN vehicles v USING (vin)
           WHERE v.automaker_id = %(a)s
              AND (%(model)s::text IS NULL OR v.model = %(model)s)
              AND (%(fleet)s::text IS NULL OR v.fleet = %(fleet)s)
              AND (cardinality(%(iccids)s::text[]) = 0 OR s.iccid = ANY(%(iccids)s))""",
        {"a": automaker_id, "model": model, "fleet": fleet, "iccids": list(iccids)},
    )
    return [r[0] for r in await cur.fetchall()]


async def sims_of_driver(conn: Connection, driver_ids: Sequence[UUID]) -> list[str]:
    cur = await conn.execute(
        "SELECT s.iccid FROM vehicle_sims s JOIN vehicles v USING (vin)"
        " WHERE v.driver_id = ANY(%s)",
        (list(driver_ids),),
    )
    return [r[0] for r in await cur.fetchall()]


# --- Partnerships ------------------------------------------------------------------------------


async def add_partnership(conn: Connection, *, automaker_id: UUID, sponsor_id: UUID) -> None:
    await conn.execute(
        "INSERT INTO sponsor_partnerships (automaker_id, sponsor_id) VALUES (%s, %s)"
        " ON CONFLICT DO NOTHING",
        (automaker_id, sponsor_id),
    )


async def remove_partnership(conn: Connection, *, automaker_id: UUID, sponsor_id: UUID) -> bool:
    cur = await conn.execute(
        "DELETE FROM sponsor_partnerships WHERE automaker_id = %s AND sponsor_id = %s",
        (automaker_id, sponsor_id),
    )
    return cur.rowcount > 0


@dataclass(frozen=True, slots=True)
class PartnershipRow:
    sponsor_id: UUID
    created_at: datetime


async def partners_of(
    conn: Connection, automaker_id: UUID, *, after: tuple[datetime, UUID] | None, limit: int
) -> list[PartnershipRow]:
    """The sponsors the automaker allowed, in the order it allowed them, after `after`."""
    async with conn.cursor(row_factory=class_row(PartnershipRow)) as cur:
        await cur.execute(
            """SELECT sponsor_id, created_at FROM sponsor_partnerships
               WHERE automaker_id = %(automaker)s
                 AND (%(at)s::timestamptz IS NULL OR (created_at, sponsor_id) > (%(at)s, %(id)s))
               ORDER BY created_at, sponsor_id LIMIT %(limit)s""",
            {
                "automaker": automaker_id, "at": after and after[0], "id": after and after[1],
                "limit": limit,
            },
        )  # fmt: skip
        return await cur.fetchall()


async def is_partner(conn: Connection, *, automaker_id: UUID, sponsor_id: UUID) -> bool:
    cur = await conn.execute(
        "SELECT 1 FROM sponsor_partnerships WHERE automaker_id = %s AND sponsor_id = %s",
        (automaker_id, sponsor_id),
    )
    return await cur.fetchone() is not None


# --- Policies and their terms ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PolicyRow:
    policy_id: int
    sponsor_id: UUID
    name: str
    budget_bytes: int | None
    budget_minor: int | None
    currency: str
    create_digest: bytes
    created_at: datetime


@dataclass(frozen=True, slots=True)
class TermsRow:
    policy_id: int
    effective_from: datetime
    scope_kind: str
    automaker_id: UUID
    model: str | None
    fleet: str | None
    iccids: list[str]
    apps: list[str]
    categories: list[str]
    priority: int
    cap_bytes: int | None
    unit_price: Decimal
    valid_from: datetime
    valid_until: datetime | None
    paused: bool
    created_at: datetime

    @property
    def scope(self) -> dict[str, object]:
        """The scope's columns as the one object the API shows."""
        return {
            "kind": self.scope_kind, "automaker_id": self.automaker_id, "model": self.model,
            "fleet": self.fleet, "iccids": self.iccids,
        }  # fmt: skip


_POLICY = (
    "policy_id, sponsor_id, name, budget_bytes, budget_minor, currency, create_digest, created_at"
)
_TERMS = (
    "policy_id, effective_from, scope_kind, automaker_id, model, fleet, iccids, apps,"
    " categories, priority, cap_bytes, unit_price, valid_from, valid_until, paused, created_at"
)


async def insert_policy(
    conn: Connection,
    *,
    sponsor_id: UUID,
    name: str,
    budget_bytes: int | None,
    budget_minor: int | None,
    currency: str,
    key: str,
    digest: bytes,
) -> tuple[PolicyRow, bool]:
    """The policy created under the sponsor's key: (row, created now)."""
    async with conn.cursor(row_factory=class_row(PolicyRow)) as cur:
        await cur.execute(
            f"""INSERT INTO policies (sponsor_id, name, budget_bytes, budget_minor, currency,
                                      create_key, create_digest)
                VALUES (%s, %s, %s, %s, %s, %s, %s)
                ON CONFLICT (sponsor_id, create_key) DO NOTHING RETURNING {_POLICY}""",
            (sponsor_id, name, budget_bytes, budget_minor, currency, key, digest),
        )
        row = await cur.fetchone()
        if row is not None:
            await conn.execute("INSERT INTO policy_spend (policy_id) VALUES (%s)", (row.policy_id,))
            return row, True
        await cur.execute(
            f"SELECT {_POLICY} FROM policies WHERE sponsor_id = %s AND create_key = %s",
            (sponsor_id, key),
        )
        found = await cur.fetchone()
        assert found is not None
        return found, False


async def insert_terms(conn: Connection, terms: TermsRow) -> None:
    await conn.execute(
        """INSERT INTO policy_terms (policy_id, effective_from, scope_kind, automaker_id, model,
               fleet, iccids, apps, categories, priority, cap_bytes, unit_price, valid_from,
               valid_until, paused)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
           ON CONFLICT (policy_id, effective_from) DO UPDATE SET
               scope_kind = excluded.scope_kind, automaker_id = excluded.automaker_id,
               model = excluded.model, fleet = excluded.fleet, iccids = excluded.iccids,
               apps = excluded.apps, categories = excluded.categories,
               priority = excluded.priority, cap_bytes = excluded.cap_bytes,
               unit_price = excluded.unit_price, valid_from = excluded.valid_from,
               valid_until = excluded.valid_until, paused = excluded.paused,
               created_at = now()""",
        (
            terms.policy_id, terms.effective_from, terms.scope_kind, terms.automaker_id,
            terms.model, terms.fleet, terms.iccids, terms.apps, terms.categories,
            terms.priority, terms.cap_bytes, terms.unit_price, terms.valid_from,
            terms.valid_until, terms.paused,
        ),
    )  # fmt: skip


async def policy(
    conn: Connection, policy_id: int, *, sponsor_id: UUID | None = None, for_update: bool = False
) -> PolicyRow | None:
    async with conn.cursor(row_factory=class_row(PolicyRow)) as cur:
        await cur.execute(
            f"SELECT {_POLICY} FROM policies WHERE policy_id = %s"
            " AND (%s::uuid IS NULL OR sponsor_id = %s)" + (" FOR UPDATE" if for_update else ""),
            (policy_id, sponsor_id, sponsor_id),
        )
        return await cur.fetchone()


async def policies_of(
    conn: Connection, sponsor_id: UUID, *, after: int | None, limit: int
) -> list[PolicyRow]:
    async with conn.cursor(row_factory=class_row(PolicyRow)) as cur:
        await cur.execute(
            f"SELECT {_POLICY} FROM policies WHERE sponsor_id = %s AND policy_id > %s"
            " ORDER BY policy_id LIMIT %s",
            (sponsor_id, after or 0, limit),
        )
        return await cur.fetchall()


async def all_policies(conn: Connection) -> list[PolicyRow]:
    async with conn.cursor(row_factory=class_row(PolicyRow)) as cur:
        await cur.execute(f"SELECT {_POLICY} FROM policies ORDER BY policy_id")
        return await cur.fetchall()


async def terms_of(conn: Connection, policy_ids: Sequence[int]) -> list[TermsRow]:
    async with conn.cursor(row_factory=class_row(TermsRow)) as cur:
        await cur.execute(
            f"SELECT {_TERMS} FROM policy_terms WHERE policy_id = ANY(%s)"
            " ORDER BY policy_id, effective_from",
            (list(policy_ids),),
        )
        return await cur.fetchall()


async def terms_prices(
    conn: Connection, policy_ids: Sequence[int]
) -> list[tuple[int, datetime, str, str, Decimal]]:
    """(policy, effective_from, name, currency, unit price) of every version of the terms."""
    cur = await conn.execute(
        """SELECT t.policy_id, t.effective_from, p.name, p.currency, t.unit_price
           FROM policy_terms t JOIN policies p USING (policy_id)
           WHERE t.policy_id = ANY(%s)""",
        (list(policy_ids),),
    )
    return await cur.fetchall()


async def policy_currencies(conn: Connection, sponsor_id: UUID) -> list[str]:
    cur = await conn.execute(
        "SELECT DISTINCT currency FROM policies WHERE sponsor_id = %s ORDER BY currency",
        (sponsor_id,),
    )
    return [currency for (currency,) in await cur.fetchall()]


async def all_terms(conn: Connection) -> list[TermsRow]:
    async with conn.cursor(row_factory=class_row(TermsRow)) as cur:
        await cur.execute(f"SELECT {_TERMS} FROM policy_terms ORDER BY policy_id, effective_from")
        return await cur.fetchall()


async def terms_changed_since(conn: Connection, since: datetime | None) -> list[TermsRow]:
    async with conn.cursor(row_factory=class_row(TermsRow)) as cur:
        await cur.execute(
            f"SELECT {_TERMS} FROM policy_terms WHERE %s::timestamptz IS NULL OR created_at > %s",
            (since, since),
        )
        return await cur.fetchall()


async def terms_version(conn: Connection) -> tuple[datetime | None, int]:
    cur = await conn.execute("SELECT max(created_at), count(*) FROM policy_terms")
    row = await cur.fetchone()
    assert row is not None
    return row[0], int(row[1])


# --- Spend -------------------------------------------------------------------------------------


async def policy_spend(
    conn: Connection, policy_ids: Sequence[int], *, for_update: bool = False
) -> dict[int, tuple[int, Decimal]]:
    # Locked in id order: two runs (or a run and a report) never deadlock on them.
    cur = await conn.execute(
        "SELECT policy_id, used_bytes, used_money FROM policy_spend WHERE policy_id = ANY(%s)"
        " ORDER BY policy_id" + (" FOR UPDATE" if for_update else ""),
        (list(policy_ids),),
    )
    return {r[0]: (int(r[1]), r[2]) for r in await cur.fetchall()}


async def set_policy_spend(conn: Connection, spend: Sequence[tuple[int, int, Decimal]]) -> None:
    """Set (policy, used bytes, used money) for a batch's policies in one statement."""
    if not spend:
        return
    await conn.execute(
        """UPDATE policy_spend p SET used_bytes = s.used_bytes, used_money = s.used_money
           FROM unnest(%s::bigint[], %s::bigint[], %s::numeric[]) AS s(policy_id, used_bytes,
                                                                         used_money)
           WHERE p.policy_id = s.policy_id""",
        ([s[0] for s in spend], [s[1] for s in spend], [s[2] for s in spend]),
    )


async def caps_used(
    conn: Connection, policy_ids: Sequence[int], periods: Sequence[date], iccids: Sequence[str]
) -> dict[tuple[int, date, str], int]:
    cur = await conn.execute(
        "SELECT policy_id, period, iccid, used_bytes FROM policy_sim_spend"
        " WHERE policy_id = ANY(%s) AND period = ANY(%s) AND iccid = ANY(%s)",
        (list(policy_ids), list(periods), list(iccids)),
    )
    return {(r[0], r[1], r[2]): int(r[3]) for r in await cur.fetchall()}


async def set_cap_use(conn: Connection, use: Sequence[tuple[int, date, str, int]]) -> None:
    if not use:
        return
    ordered = sorted(use)
    await conn.execute(
        """INSERT INTO policy_sim_spend AS c (policy_id, period, iccid, used_bytes)
           SELECT * FROM unnest(%s::bigint[], %s::date[], %s::text[], %s::bigint[])
           ON CONFLICT (policy_id, period, iccid) DO UPDATE SET used_bytes = excluded.used_bytes""",
        (
            [u[0] for u in ordered], [u[1] for u in ordered], [u[2] for u in ordered],
            [u[3] for u in ordered],
        ),
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class CapUseRow:
    iccid: str
    used_bytes: int


async def cap_use_of_policy(
    conn: Connection, policy_id: int, period: date, *, after: str | None, limit: int
) -> list[CapUseRow]:
    async with conn.cursor(row_factory=class_row(CapUseRow)) as cur:
        await cur.execute(
            "SELECT iccid, used_bytes FROM policy_sim_spend WHERE policy_id = %s AND period = %s"
            " AND iccid > %s ORDER BY iccid LIMIT %s",
            (policy_id, period, after or "", limit),
        )
        return await cur.fetchall()


# --- Alerts ------------------------------------------------------------------------------------


async def alert_thresholds(
    conn: Connection, sponsor_ids: Sequence[UUID]
) -> dict[UUID, tuple[list[int], list[int]]]:
    cur = await conn.execute(
        "SELECT sponsor_id, cap_percents, budget_percents FROM sponsor_alert_thresholds"
        " WHERE sponsor_id = ANY(%s)",
        (list(sponsor_ids),),
    )
    return {r[0]: (list(r[1]), list(r[2])) for r in await cur.fetchall()}


async def set_alert_thresholds(
    conn: Connection, sponsor_id: UUID, cap_percents: list[int], budget_percents: list[int]
) -> None:
    await conn.execute(
        """INSERT INTO sponsor_alert_thresholds (sponsor_id, cap_percents, budget_percents)
           VALUES (%s, %s, %s) ON CONFLICT (sponsor_id) DO UPDATE
           SET cap_percents = excluded.cap_percents,
               budget_percents = excluded.budget_percents, updated_at = now()""",
        (sponsor_id, cap_percents, budget_percents),
    )


async def record_alerts(
    conn: Connection, alerts: Sequence[tuple[int, str, str, date, int]]
) -> list[tuple[int, str, str, date, int]]:
    """Record threshold crossings; returns those not recorded before (each is sent once)."""
    if not alerts:
        return []
    ordered = sorted(set(alerts))
    cur = await conn.execute(
        """INSERT INTO policy_alerts (policy_id, kind, iccid, period, percent)
           SELECT * FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::date[], %s::int[])
           ON CONFLICT DO NOTHING RETURNING policy_id, kind, iccid, period, percent""",
        (
            [a[0] for a in ordered], [a[1] for a in ordered], [a[2] for a in ordered],
            [a[3] for a in ordered], [a[4] for a in ordered],
        ),
    )  # fmt: skip
    return [(r[0], r[1], r[2], r[3], r[4]) for r in await cur.fetchall()]


async def sims_of_vehicles_changed_since(conn: Connection, since: datetime) -> list[str]:
    cur = await conn.execute(
        """SELECT s.iccid FROM vehicles v JOIN vehicle_sims s USING (vin)
           WHERE v.updated_at >= %s ORDER BY s.iccid""",
        (since,),
    )
    return [r[0] for r in await cur.fetchall()]


async def fitted_sims(conn: Connection, *, after: str | None, limit: int) -> list[str]:
    cur = await conn.execute(
        "SELECT iccid FROM vehicle_sims WHERE iccid > %s ORDER BY iccid LIMIT %s",
        (after or "", limit),
    )
    return [r[0] for r in await cur.fetchall()]
