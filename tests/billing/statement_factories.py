"""Factories for statement, invoice, revenue-share and margin tests.

A STAND-IN FOR THE ALLOCATION RUN: these helpers write `allocations` rows (and the device
reports they point at) with plain SQL, as the run would, so that statements can be tested
before and apart from the run. They never write `usage_items`, so the real run never sees
them. The end-to-end tests of the run replace them with real runs over MQTT.

Plain async helpers with keyword-only options. Every test uses its own tenants and ICCIDs
(the database is shared); tests that read across tenants (the margin) use the rolled-back
`conn` fixture and a period no other test writes to.
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from uuid import UUID
from zoneinfo import ZoneInfo

from flowbill import db
from flowbill.settings import Settings
from tenants import service as tenants
from tenants.schemas import Role
from tests.conftest import new_iccid

SHANGHAI = ZoneInfo("Asia/Shanghai")
# Far before any test's usage: every policy here has one set of terms from then on.
TERMS_FROM = datetime(2001, 1, 1, tzinfo=UTC)

_seq = itertools.count(1)


@asynccontextmanager
async def committed(settings: Settings) -> AsyncIterator[db.Connection]:
    """A connection whose writes are committed at the end of the block (for API tests)."""
    conn = await db.connect(settings, application_name="flowbill-test-factory")
    try:
        async with conn.transaction():
            yield conn
    finally:
        await conn.close()


async def tenant(conn: db.Connection, *, role: Role) -> UUID:
    """A tenant of the role, written on `conn` (rolled back with it in `conn` tests)."""
    created = await tenants.create_tenant(
        conn, name=f"{role.value} {secrets.token_hex(4)}", role=role, key_label="test"
    )
    return created.tenant.tenant_id


def app_id(prefix: str = "app") -> str:
    """An app id of this test only."""
    return f"{prefix}.{secrets.token_hex(5)}"


def at(period: date, *, day: int = 10, hour: int = 12) -> datetime:
    """An instant inside the period (billing zone Asia/Shanghai), in UTC."""
    return datetime(period.year, period.month, day, hour, tzinfo=SHANGHAI).astimezone(UTC)


async def catalogue_app(conn: db.Connection, *, app: str, category: str) -> None:
    await conn.execute(
        "INSERT INTO catalogue_apps (app, category) VALUES (%s, %s) ON CONFLICT DO NOTHING",
        (app, category),
    )


@dataclass(frozen=True, slots=True)
class Policy:
    policy_id: int
    sponsor_id: UUID
    terms_from: datetime


async def policy(
    conn: db.Connection,
    *,
    sponsor_id: UUID,
    unit_price: Decimal | str = "0.05",
    name: str | None = None,
    currency: str = "CNY",
    categories: tuple[str, ...] = ("navigation",),
    terms_from: datetime = TERMS_FROM,
) -> Policy:
    """A policy with one set of terms. Its scope is the sponsor's own (vehicle-less)
    automaker id, so the real allocation run never applies it to anything."""
    cur = await conn.execute(
        "INSERT INTO policies (sponsor_id, name, currency, create_key, create_digest)"
        " VALUES (%s, %s, %s, %s, %s) RETURNING policy_id",
        (sponsor_id, name or f"policy {secrets.token_hex(3)}", currency,
         f"factory-{secrets.token_hex(8)}", secrets.token_bytes(32)),
    )  # fmt: skip
    row = await cur.fetchone()
    assert row is not None
    found = Policy(policy_id=int(row[0]), sponsor_id=sponsor_id, terms_from=terms_from)
    await terms(conn, policy=found, effective_from=terms_from, unit_price=unit_price,
                categories=categories)  # fmt: skip
    return found


async def terms(
    conn: db.Connection,
    *,
    policy: Policy,
    effective_from: datetime,
    unit_price: Decimal | str,
    categories: tuple[str, ...] = ("navigation",),
) -> Policy:
    """New terms of the policy from a moment (a price change); returns the policy as of
    those terms."""
    await conn.execute(
        """
        INSERT INTO policy_terms (policy_id, effective_from, scope_kind, automaker_id,
                                  categories, priority, unit_price, valid_from)
        VALUES (%s, %s, 'automaker', %s, %s, 100, %s, %s)
        """,
        (policy.policy_id, effective_from, policy.sponsor_id, list(categories),
         Decimal(unit_price), effective_from),
    )  # fmt: skip
    return Policy(
        policy_id=policy.policy_id, sponsor_id=policy.sponsor_id, terms_from=effective_from
    )


@dataclass(frozen=True, slots=True)
class Item:
    window_start: datetime
    iccid: str
    boot: int
    seq: int
    app: str


async def allocate(
    conn: db.Connection,
    *,
    window_start: datetime,
    app: str,
    category: str,
    data_bytes: int,
    payer_kind: str = "sponsor",
    payer_id: UUID | None = None,
    policy: Policy | None = None,
    period: date | None = None,
    adjustment: bool = False,
    iccid: str | None = None,
    boot: int = 1,
    seq: int | None = None,
    report: bool = True,
) -> Item:
    """One allocation row, as the run writes it, and (unless `report=False`) the device
    report it names. `period` defaults to the month of use."""
    iccid = iccid or new_iccid()
    seq = seq if seq is not None else next(_seq)
    local = window_start.astimezone(SHANGHAI)
    booked = period or date(local.year, local.month, 1)
    if payer_kind == "sponsor":
        assert policy is not None
        payer_id = policy.sponsor_id
    if report:
        await conn.execute(
            """
            INSERT INTO usage_reports (iccid, boot, seq, window_start, window_end, apps,
                                       received_at)
            VALUES (%s, %s, %s, %s, %s, 1, %s) ON CONFLICT DO NOTHING
            """,
            (iccid, boot, seq, window_start, window_start + timedelta(minutes=1),
             window_start + timedelta(minutes=1, seconds=3)),
        )  # fmt: skip
    await conn.execute(
        """
        INSERT INTO allocations (window_start, iccid, boot, seq, app, category, period,
                                 payer_kind, payer_id, policy_id, terms_from, bytes,
                                 adjustment, batch_id)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, 0)
        """,
        (window_start, iccid, boot, seq, app, category, booked, payer_kind, payer_id,
         policy.policy_id if policy else None, policy.terms_from if policy else None,
         data_bytes, adjustment),
    )  # fmt: skip
    return Item(window_start=window_start, iccid=iccid, boot=boot, seq=seq, app=app)
