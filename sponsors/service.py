"""Sponsors: vehicles and their SIMs, partnerships and policies (the app catalogue is
`sponsors.catalogue`).

A policy's terms are versioned in time: a change adds terms from a moment that is not in the
past, so what was allocated under the old terms stays as it was. Pausing and resuming are
changes like any other. Services never commit: the caller owns the transaction.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from uuid import UUID

from flowbill import paging
from flowbill.db import Connection
from flowbill.paging import Page
from ingest.protocol import is_valid_iccid
from sponsors import ownership, price_floors, repository
from sponsors.allocation import Budget, PolicyBook, Scope, SimView, Spend, Terms
from sponsors.catalogue import categories
from sponsors.errors import (
    EffectiveInThePast,
    IdempotencyKeyReused,
    InvalidDriver,
    InvalidIccid,
    NotAnAutomaker,
    PolicyNotFound,
    ScopeNotAllowed,
    SimFittedElsewhere,
    SimsOutsideScope,
    UnknownApps,
    VehicleNotFound,
    VehicleOfAnotherAutomaker,
)
from sponsors.schemas import (
    AlertThresholds,
    PartnerPublic,
    PolicyCreate,
    PolicyPublic,
    PolicySpend,
    ScopeKind,
    SimCapUse,
    SimPublic,
    TermsChange,
    TermsPublic,
    TermsSpec,
    VehiclePublic,
    VehicleUpdate,
)
from tenants import service as tenants
from tenants.errors import TenantNotFound
from tenants.schemas import Role

# A change "from now" sent by a client whose clock is a little behind is still "now".
_CLOCK_SKEW = timedelta(seconds=5)

# --- Vehicles and SIMs -------------------------------------------------------------------------


async def _require_role(conn: Connection, tenant_id: UUID, role: Role) -> bool:
    try:
        tenant = await tenants.get_tenant(conn, tenant_id)
    except TenantNotFound:
        return False
    return tenant.role == role and not tenant.disabled


async def put_vehicle(
    conn: Connection,
    *,
    automaker_id: UUID,
    vin: str,
    body: VehicleUpdate,
    now: datetime | None = None,
) -> tuple[VehiclePublic, list[str]]:
    """Register or update one of the automaker's vehicles and the SIMs fitted to it (each
    must be the automaker's); a driver named is invited (see `ownership`). Returns the vehicle
    and the SIMs whose vehicle (and so whose coverage) changed."""
    now = now or datetime.now(UTC)
    bad = [i for i in body.iccids if not is_valid_iccid(i)]
    if bad:
        raise InvalidIccid("ICCIDs with a wrong check digit: " + ", ".join(bad), iccids=bad)
    if len(set(body.iccids)) != len(body.iccids):
        raise InvalidIccid("an ICCID is listed twice")
    if body.driver_id is not None and not await _require_role(conn, body.driver_id, Role.DRIVER):
        raise InvalidDriver(f"{body.driver_id} is not an active driver")
    await ownership.require_owned(conn, body.iccids, automaker_id, now=now)
    owner = await repository.upsert_vehicle(
        conn, vin=vin, automaker_id=automaker_id, model=body.model, fleet=body.fleet
    )
    if owner != automaker_id:
        raise VehicleOfAnotherAutomaker(f"the VIN {vin} is registered by another automaker")
    elsewhere = await repository.sims_fitted_elsewhere(conn, vin, body.iccids)
    if elsewhere:
        raise SimFittedElsewhere(
            "SIMs fitted to another vehicle: " + ", ".join(elsewhere), iccids=elsewhere
        )
    changed = await repository.fit_sims(conn, vin, body.iccids)
    await ownership.name_driver(conn, vin=vin, driver_id=body.driver_id, now=now)
    found = await repository.vehicle(conn, vin)
    assert found is not None
    return VehiclePublic.model_validate(found), sorted(set(changed) | set(found.iccids))


async def vehicle(conn: Connection, *, automaker_id: UUID, vin: str) -> VehiclePublic:
    """One of the automaker's vehicles."""
    found = await repository.vehicle(conn, vin)
    if found is None or found.automaker_id != automaker_id:
        raise VehicleNotFound(f"no vehicle {vin}")
    return VehiclePublic.model_validate(found)


async def vehicles(
    conn: Connection, *, automaker_id: UUID, limit: int, cursor: str | None
) -> Page[VehiclePublic]:
    """The automaker's vehicles by VIN, a page at a time."""
    (after,) = paging.decode_cursor(cursor, (str,), scope="vehicles") if cursor else (None,)
    rows = await repository.vehicles_of(conn, automaker_id, after=after, limit=limit + 1)
    return paging.page(
        [VehiclePublic.model_validate(r) for r in rows],
        limit=limit, key=lambda v: (v.vin,), scope="vehicles",
    )  # fmt: skip


async def vehicles_of_driver(conn: Connection, driver_id: UUID) -> list[VehiclePublic]:
    """Every vehicle a driver accepted (a driver has a few)."""
    return [
        VehiclePublic.model_validate(r)
        for r in await repository.vehicles_of_driver(conn, driver_id)
    ]


async def driver_vehicles(
    conn: Connection, *, driver_id: UUID, limit: int, cursor: str | None
) -> Page[VehiclePublic]:
    """The vehicles a driver accepted, by VIN, a page at a time."""
    (after,) = paging.decode_cursor(cursor, (str,), scope="driver-vehicles") if cursor else (None,)
    rows = await repository.vehicles_of_driver(conn, driver_id, after=after, limit=limit + 1)
    return paging.page(
        [VehiclePublic.model_validate(r) for r in rows],
        limit=limit, key=lambda v: (v.vin,), scope="driver-vehicles",
    )  # fmt: skip


async def sims(
    conn: Connection, *, automaker_id: UUID, limit: int, cursor: str | None
) -> Page[SimPublic]:
    """The SIMs fitted to the automaker's vehicles, by ICCID, a page at a time."""
    (after,) = paging.decode_cursor(cursor, (str,), scope="sims") if cursor else (None,)
    rows = await repository.sims_of(conn, automaker_id, after=after, limit=limit + 1)
    return paging.page(
        [SimPublic.model_validate(r) for r in rows],
        limit=limit, key=lambda s: (s.iccid,), scope="sims",
    )  # fmt: skip


async def sim_views(conn: Connection, iccids: list[str]) -> dict[str, SimView]:
    """What the allocation rules need to know of each SIM (absent: no vehicle)."""
    return {
        r.iccid: SimView(r.iccid, r.automaker_id, r.model, r.fleet, r.driver_id)
        for r in await repository.sims(conn, iccids)
    }


async def sims_of_drivers(conn: Connection, driver_ids: list[UUID]) -> list[str]:
    """The SIMs fitted to these drivers' vehicles."""
    return await repository.sims_of_driver(conn, driver_ids)


# --- Partnerships ------------------------------------------------------------------------------


async def allow_sponsor(conn: Connection, *, automaker_id: UUID, sponsor_id: UUID) -> None:
    """Let another sponsor pay for traffic of this automaker's vehicles."""
    if sponsor_id == automaker_id or not await _require_role(conn, sponsor_id, Role.SPONSOR):
        raise NotAnAutomaker(f"{sponsor_id} is not another active sponsor")
    await repository.add_partnership(conn, automaker_id=automaker_id, sponsor_id=sponsor_id)


async def disallow_sponsor(conn: Connection, *, automaker_id: UUID, sponsor_id: UUID) -> None:
    """Withdraw that permission: existing policies keep their terms; new terms are refused."""
    if not await repository.remove_partnership(
        conn, automaker_id=automaker_id, sponsor_id=sponsor_id
    ):
        raise PolicyNotFound(f"{sponsor_id} is not a sponsor of your vehicles")


async def partners(
    conn: Connection, *, automaker_id: UUID, limit: int, cursor: str | None
) -> Page[PartnerPublic]:
    """The sponsors the automaker allowed, in the order it allowed them, a page at a time."""
    after = paging.decode_cursor(cursor, (datetime, UUID), scope="partners") if cursor else None
    rows = await repository.partners_of(conn, automaker_id, after=after, limit=limit + 1)
    return paging.page(
        [PartnerPublic.model_validate(r) for r in rows],
        limit=limit, key=lambda p: (p.created_at, p.sponsor_id), scope="partners",
    )  # fmt: skip


# --- Policies ----------------------------------------------------------------------------------


def _digest(body: PolicyCreate) -> bytes:
    canonical = json.dumps(body.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha256(canonical.encode()).digest()


async def _check_terms(
    conn: Connection, sponsor_id: UUID, spec: TermsSpec, *, now: datetime
) -> set[str]:
    """Check what the terms name; returns the categories they pay for (the rate card's)."""
    scope = spec.scope
    paid_for = {c.value for c in spec.categories}
    if scope.automaker_id != sponsor_id and not await repository.is_partner(
        conn, automaker_id=scope.automaker_id, sponsor_id=sponsor_id
    ):
        raise ScopeNotAllowed(
            f"automaker {scope.automaker_id} has not allowed you to sponsor its vehicles"
        )
    if spec.apps:
        known = await categories(conn)
        unknown = sorted(set(spec.apps) - set(known))
        if unknown:
            raise UnknownApps(
                "apps the catalogue does not know (their traffic is the user's): "
                + ", ".join(unknown),
                apps=unknown,
            )
        paid_for.update(known[a] for a in spec.apps)
    if scope.kind == ScopeKind.SIMS:
        bad = [i for i in scope.iccids if not is_valid_iccid(i)]
        if bad:
            raise InvalidIccid("ICCIDs with a wrong check digit: " + ", ".join(bad[:20]))
        fitted = set(
            await repository.sims_in_scope(
                conn, automaker_id=scope.automaker_id, model=None, fleet=None,
                iccids=scope.iccids,
            )
        )  # fmt: skip
        owned = await ownership.owned_by(conn, scope.iccids, scope.automaker_id, now=now)
        outside = sorted(set(scope.iccids) - (fitted & owned))
        if outside:
            raise SimsOutsideScope(
                "SIMs not owned by the automaker and fitted to its vehicles: "
                + ", ".join(outside[:20]),
                iccids=outside[:100],
            )
    return paid_for


def _terms_row(
    policy_id: int, spec: TermsSpec, *, effective_from: datetime, paused: bool = False
) -> repository.TermsRow:
    scope = spec.scope
    return repository.TermsRow(
        policy_id=policy_id, effective_from=effective_from, scope_kind=scope.kind.value,
        automaker_id=scope.automaker_id, model=scope.model, fleet=scope.fleet,
        iccids=sorted(scope.iccids), apps=sorted(spec.apps),
        categories=sorted(c.value for c in spec.categories), priority=spec.priority,
        cap_bytes=spec.cap_bytes, unit_price=spec.unit_price,
        valid_from=spec.valid_from or effective_from, valid_until=spec.valid_until,
        paused=paused, created_at=effective_from,
    )  # fmt: skip


def to_terms(row: repository.TermsRow, sponsor_id: UUID) -> Terms:
    """The allocation rules' view of a terms row."""
    return Terms(
        policy_id=row.policy_id, sponsor_id=sponsor_id, effective_from=row.effective_from,
        scope=Scope(row.scope_kind, row.automaker_id, row.model, row.fleet,
                    frozenset(row.iccids)),
        apps=frozenset(row.apps), categories=frozenset(row.categories), priority=row.priority,
        cap_bytes=row.cap_bytes, unit_price=row.unit_price, valid_from=row.valid_from,
        valid_until=row.valid_until, paused=row.paused,
    )  # fmt: skip


def _budget(row: repository.PolicyRow) -> Budget:
    return Budget(
        bytes_limit=row.budget_bytes,
        money_limit=None if row.budget_minor is None else Decimal(row.budget_minor) / 100,
    )


async def _public_policy(
    conn: Connection, row: repository.PolicyRow, *, now: datetime
) -> PolicyPublic:
    history = await repository.terms_of(conn, [row.policy_id])
    current = next((t for t in reversed(history) if t.effective_from <= now), history[0])
    used = (await repository.policy_spend(conn, [row.policy_id])).get(
        row.policy_id, (0, Decimal(0))
    )
    spend = Spend(
        budgets={row.policy_id: _budget(row)},
        used_bytes={row.policy_id: used[0]},
        used_money={row.policy_id: used[1]},
    )
    return PolicyPublic.model_validate(
        {
            **asdict(row), "terms": TermsPublic.model_validate(current),
            "history": [TermsPublic.model_validate(t) for t in history],
            "spend": PolicySpend(
                used_bytes=used[0], used_money=used[1],
                budget_left_bytes=spend.budget_left(to_terms(current, row.sponsor_id)),
            ),
        }
    )  # fmt: skip


async def create_policy(
    conn: Connection,
    *,
    sponsor_id: UUID,
    key: str,
    body: PolicyCreate,
    now: datetime,
    open_since: datetime,
) -> tuple[PolicyPublic, bool]:
    """Create a policy under the sponsor's Idempotency-Key: (policy, created now).

    It pays from `valid_from` (default now), which may lie in the past as far as the start of
    the earliest month still open (`open_since`): usage of that time not yet allocated, or
    arriving late, is then the policy's; usage already allocated stays as it was."""
    digest = _digest(body)
    if body.valid_from is not None and body.valid_from < open_since:
        raise EffectiveInThePast(
            f"a policy may start no earlier than {open_since.isoformat()}, the start of the"
            " earliest billing month still open"
        )
    paid_for = await _check_terms(conn, sponsor_id, body, now=now)
    row, created = await repository.insert_policy(
        conn, sponsor_id=sponsor_id, name=body.name, budget_bytes=body.budget_bytes,
        budget_minor=body.budget_minor, currency=body.currency, key=key, digest=digest,
    )  # fmt: skip
    if not created:
        if row.create_digest != digest:
            raise IdempotencyKeyReused(f"the key {key!r} created another policy")
        return await _public_policy(conn, row, now=now), False
    # After the replay check, so a repeat answers what it created even if the floor rose since
    # (the caller's transaction is rolled back on a refusal: nothing is kept under the key).
    await price_floors.require_floor(
        conn, sponsor_id=sponsor_id, categories=paid_for, currency=body.currency,
        unit_price=body.unit_price, at=now,
    )  # fmt: skip
    start = min(body.valid_from or now, now)
    await repository.insert_terms(conn, _terms_row(row.policy_id, body, effective_from=start))
    return await _public_policy(conn, row, now=now), True


async def _own_policy(
    conn: Connection, sponsor_id: UUID, policy_id: int, *, for_update: bool = False
) -> repository.PolicyRow:
    row = await repository.policy(conn, policy_id, sponsor_id=sponsor_id, for_update=for_update)
    if row is None:
        raise PolicyNotFound(f"no policy {policy_id}")
    return row


async def change_terms(
    conn: Connection, *, sponsor_id: UUID, policy_id: int, body: TermsChange, now: datetime
) -> PolicyPublic:
    """New terms from a moment on (default now); what was allocated before stays."""
    row = await _own_policy(conn, sponsor_id, policy_id, for_update=True)
    effective = body.effective_from or now
    if effective < now - _CLOCK_SKEW:
        raise EffectiveInThePast("`effective_from` must not be in the past")
    effective = max(effective, now)
    await price_floors.require_floor(
        conn, sponsor_id=sponsor_id, categories=await _check_terms(conn, sponsor_id, body, now=now),
        currency=row.currency, unit_price=body.unit_price, at=effective,
    )  # fmt: skip
    history = await repository.terms_of(conn, [policy_id])
    paused = next((t.paused for t in reversed(history) if t.effective_from <= effective), False)
    spec = body
    if body.valid_from is None:
        # Unchanged validity unless the sponsor says otherwise.
        spec = body.model_copy(update={"valid_from": history[0].valid_from})
    await repository.insert_terms(
        conn, _terms_row(policy_id, spec, effective_from=effective, paused=paused)
    )
    return await _public_policy(conn, row, now=now)


async def set_paused(
    conn: Connection, *, sponsor_id: UUID, policy_id: int, paused: bool, now: datetime
) -> PolicyPublic:
    """Pause or resume from now: the current terms again, paused or not."""
    row = await _own_policy(conn, sponsor_id, policy_id, for_update=True)
    history = await repository.terms_of(conn, [policy_id])
    current = next((t for t in reversed(history) if t.effective_from <= now), history[0])
    if current.paused != paused:
        await repository.insert_terms(
            conn, replace(current, effective_from=max(now, current.effective_from), paused=paused)
        )
    return await _public_policy(conn, row, now=now)


async def policy(
    conn: Connection, *, sponsor_id: UUID, policy_id: int, now: datetime
) -> PolicyPublic:
    """One of the sponsor's policies with its terms history and what it has spent."""
    return await _public_policy(conn, await _own_policy(conn, sponsor_id, policy_id), now=now)


async def policies(
    conn: Connection, *, sponsor_id: UUID, now: datetime, limit: int, cursor: str | None
) -> Page[PolicyPublic]:
    """The sponsor's policies, oldest first, a page at a time."""
    (after,) = paging.decode_cursor(cursor, (int,), scope="policies") if cursor else (None,)
    rows = await repository.policies_of(conn, sponsor_id, after=after, limit=limit + 1)
    found = paging.page(rows, limit=limit, key=lambda p: (p.policy_id,), scope="policies")
    return Page[PolicyPublic](
        items=[await _public_policy(conn, r, now=now) for r in found.items],
        next_cursor=found.next_cursor,
    )


async def cap_use(
    conn: Connection,
    *,
    sponsor_id: UUID,
    policy_id: int,
    period: date,
    limit: int,
    cursor: str | None,
) -> Page[SimCapUse]:
    """Per SIM, by ICCID, what the policy paid in a month against its cap (the cap of its
    latest terms), a page at a time."""
    (after,) = paging.decode_cursor(cursor, (str,), scope="policy-caps") if cursor else (None,)
    await _own_policy(conn, sponsor_id, policy_id)
    cap = (await repository.terms_of(conn, [policy_id]))[-1].cap_bytes
    rows = await repository.cap_use_of_policy(conn, policy_id, period, after=after, limit=limit + 1)
    return paging.page(
        [SimCapUse.model_validate({**asdict(r), "cap_bytes": cap}) for r in rows],
        limit=limit, key=lambda c: (c.iccid,), scope="policy-caps",
    )  # fmt: skip


async def set_alert_thresholds(
    conn: Connection, *, sponsor_id: UUID, body: AlertThresholds
) -> AlertThresholds:
    """Which percentages of caps and budgets send an alert."""
    caps, budgets = sorted(set(body.cap_percents)), sorted(set(body.budget_percents))
    await repository.set_alert_thresholds(conn, sponsor_id, caps, budgets)
    return AlertThresholds(cap_percents=caps, budget_percents=budgets)


async def alert_thresholds(conn: Connection, *, sponsor_id: UUID) -> AlertThresholds:
    """The percentages of caps and budgets that send the sponsor an alert."""
    found = (await repository.alert_thresholds(conn, [sponsor_id])).get(sponsor_id)
    if found is None:
        return AlertThresholds()
    return AlertThresholds(cap_percents=found[0], budget_percents=found[1])


# --- What the allocation run reads -------------------------------------------------------------


async def policy_book(conn: Connection) -> tuple[PolicyBook, dict[int, Budget]]:
    """Every policy's terms history and budget."""
    owners = {p.policy_id: p for p in await repository.all_policies(conn)}
    histories: dict[int, list[Terms]] = {}
    for row in await repository.all_terms(conn):
        histories.setdefault(row.policy_id, []).append(
            to_terms(row, owners[row.policy_id].sponsor_id)
        )
    budgets = {pid: _budget(p) for pid, p in owners.items()}
    return PolicyBook(histories.values()), budgets


async def terms_version(conn: Connection) -> tuple[datetime | None, int]:
    """Changes whenever terms are added: the run reloads its book then."""
    return await repository.terms_version(conn)


async def _sims_in_scopes(conn: Connection, terms: list[repository.TermsRow]) -> list[str]:
    found: set[str] = set()
    for t in terms:
        found.update(
            await repository.sims_in_scope(
                conn, automaker_id=t.automaker_id, model=t.model, fleet=t.fleet,
                iccids=t.iccids,
            )
        )  # fmt: skip
    return sorted(found)


async def sims_covered_by_terms_since(conn: Connection, since: datetime | None) -> list[str]:
    """SIMs in the scope of terms added since a moment: their coverage may have changed."""
    return await _sims_in_scopes(conn, await repository.terms_changed_since(conn, since))


async def sims_covered_by_policies(conn: Connection, policy_ids: list[int]) -> list[str]:
    """SIMs in the scope of any terms of these policies."""
    return await _sims_in_scopes(conn, await repository.terms_of(conn, policy_ids))


async def spend_for_update(
    conn: Connection, policy_ids: list[int]
) -> dict[int, tuple[int, Decimal]]:
    """(bytes, exact money) each policy has taken, locked until the caller commits."""
    return await repository.policy_spend(conn, policy_ids, for_update=True)


async def caps_used(
    conn: Connection, policy_ids: list[int], periods: list[date], iccids: list[str]
) -> dict[tuple[int, date, str], int]:
    """Bytes taken against each (policy, period, SIM) cap."""
    if not policy_ids or not iccids:
        return {}
    return await repository.caps_used(conn, policy_ids, periods, iccids)


async def record_spend(
    conn: Connection,
    policies: list[tuple[int, int, Decimal]],
    caps: list[tuple[int, date, str, int]],
) -> None:
    """Store what a batch drew: (policy, bytes, money) totals and per-SIM cap use."""
    await repository.set_policy_spend(conn, policies)
    await repository.set_cap_use(conn, caps)


async def alert_thresholds_of(
    conn: Connection, sponsor_ids: list[UUID]
) -> Callable[[UUID], tuple[list[int], list[int]]]:
    """A lookup of each sponsor's (cap percents, budget percents), defaults if unset."""
    found = await repository.alert_thresholds(conn, sponsor_ids)
    default = AlertThresholds()
    fallback = (default.cap_percents, default.budget_percents)
    return lambda sponsor_id: found.get(sponsor_id, fallback)


async def record_alerts(
    conn: Connection, alerts: list[tuple[int, str, str, date, int]]
) -> list[tuple[int, str, str, date, int]]:
    """Record crossed thresholds; returns those crossed for the first time."""
    return await repository.record_alerts(conn, alerts)


async def spend_of(conn: Connection, policy_ids: list[int]) -> dict[int, tuple[int, Decimal]]:
    """(bytes, exact money) each policy has taken, without locking."""
    return await repository.policy_spend(conn, policy_ids)


async def sims_changed_since(conn: Connection, since: datetime) -> list[str]:
    """SIMs whose coverage may have changed since a moment through their vehicle or owner:
    fitted, their vehicle edited or its accepted driver changed, or taken out of a vehicle
    by an owner change. (A SIM its automaker takes out of a vehicle is found by the billing
    run's full pass.)"""
    return sorted(
        set(await repository.sims_of_vehicles_changed_since(conn, since))
        | set(await ownership.owner_changes_applied_since(conn, since))
    )


async def fitted_sims(conn: Connection, *, after: str | None, limit: int) -> list[str]:
    """Every SIM fitted to a vehicle, by ICCID, a page at a time."""
    return await repository.fitted_sims(conn, after=after, limit=limit)


# --- What billing's documents read -------------------------------------------------------------


async def terms_prices(
    conn: Connection, policy_ids: list[int]
) -> dict[tuple[int, datetime], tuple[str, str, Decimal]]:
    """(policy, terms' effective_from) → (policy name, currency, unit price per MB) of every
    version of these policies' terms: what a sponsor's statement line is priced with."""
    rows = await repository.terms_prices(conn, sorted(set(policy_ids)))
    return {
        (policy_id, since): (name, currency, price)
        for policy_id, since, name, currency, price in rows
    }


async def policy_currencies(conn: Connection, sponsor_id: UUID) -> list[str]:
    """The currencies of a sponsor's policies, each once, in order."""
    return await repository.policy_currencies(conn, sponsor_id)
