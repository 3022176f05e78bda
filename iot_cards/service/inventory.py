"""The operator's inventory: card batches imported from carriers, blocks of cards given to
merchants, and the wholesale plans merchants may sell."""

from __future__ import annotations

import csv
import io
from datetime import datetime
from uuid import UUID

from flowbill import metrics, paging
from flowbill.db import Connection
from flowbill.paging import Page
from flowbill.units import MB
from ingest import service as ingest
from ingest.protocol import is_valid_iccid
from iot_cards.errors import (
    CardNotFound,
    CardsNotFree,
    ImportRejected,
    MerchantNotFound,
    PlanNotFound,
)
from iot_cards.repository import inventory as repository
from iot_cards.schemas import (
    AssignmentReport,
    CardAssignment,
    ImportReport,
    WholesalePlanCreate,
    WholesalePlanPublic,
)
from iot_cards.service import merchants

MAX_IMPORT_ROWS = 100_000
MAX_REPORTED_ERRORS = 100
PLANS_SCOPE = "iot-wholesale-plans"


def _check_row(row: list[str]) -> tuple[tuple[str, str, str] | None, str | None]:
    if len(row) != 3:
        return None, f"expected 3 fields (iccid, imsi, msisdn), found {len(row)}"
    iccid, imsi, msisdn = (field.strip() for field in row)
    if not is_valid_iccid(iccid):
        return None, "iccid is not 19-20 digits with a valid Luhn check digit"
    if not (len(imsi) == 15 and imsi.isascii() and imsi.isdigit() and imsi.startswith("460")):
        return None, "imsi is not 15 digits starting with 460 (China)"
    if not (len(msisdn) in (11, 13) and msisdn.isascii() and msisdn.isdigit() and msisdn[0] == "1"):
        return None, "msisdn is not a mainland number of 11 or 13 digits"
    return (iccid, imsi, msisdn), None


async def import_cards(
    conn: Connection, *, csv_text: str, carrier: str, label: str, operator_id: UUID
) -> ImportReport:
    """Import a carrier's card batch (CSV: iccid,imsi,msisdn with that header). Every bad
    row is reported with its line number and reason, and then nothing is imported."""
    reader = csv.reader(io.StringIO(csv_text))
    errors: list[dict[str, object]] = []
    rows: list[tuple[str, str, str]] = []
    lines: dict[str, int] = {}
    seen: dict[str, int] = {}
    header = next(reader, None)
    if header is None or [h.strip().lower() for h in header] != ["iccid", "imsi", "msisdn"]:
        raise ImportRejected(
            "the first line must be the header iccid,imsi,msisdn",
            errors=[{"line": 1, "reason": "missing or wrong header"}],
        )
    for row in reader:
        line = reader.line_num
        if not any(field.strip() for field in row):
            continue
        if len(rows) + len(errors) >= MAX_IMPORT_ROWS:
            raise ImportRejected(f"a batch holds at most {MAX_IMPORT_ROWS} cards")
        checked, reason = _check_row(row)
        if checked is None:
            errors.append({"line": line, "reason": reason})
            continue
        duplicate = next((value for value in checked if value in seen), None)
        if duplicate is not None:
            errors.append({"line": line, "reason": f"duplicate of line {seen[duplicate]}"})
            continue
        for value in checked:
            seen[value] = line
        lines[checked[0]] = line
        rows.append(checked)
    if rows:
        existing = await repository.existing_identifiers(
            conn,
            iccids=[r[0] for r in rows],
            imsis=[r[1] for r in rows],
            msisdns=[r[2] for r in rows],
        )
        known = {value for found in existing for value in found}
        for checked_row in rows:
            clash = [
                name
                for name, value in zip(("iccid", "imsi", "msisdn"), checked_row, strict=True)
                if value in known
            ]
            if clash:
                errors.append(
                    {
                        "line": lines[checked_row[0]],
                        "reason": f"{', '.join(clash)} already imported",
                    }
                )
    if errors:
        errors.sort(key=lambda e: int(str(e["line"])))
        raise ImportRejected(
            f"{len(errors)} bad row(s); nothing was imported",
            errors=errors[:MAX_REPORTED_ERRORS],
            error_count=len(errors),
        )
    if not rows:
        raise ImportRejected("the batch holds no cards", errors=[])
    batch_id = await repository.insert_batch(
        conn, carrier=carrier, label=label, imported_by=operator_id, rows=rows
    )
    # The metering side learns the SIMs too, so their usage counts as provisioned.
    await ingest.provision_sims(conn, [r[0] for r in rows], label=f"iot:{carrier}")
    metrics.IOT_CARDS_IMPORTED.inc(len(rows))
    return ImportReport(batch_id=batch_id, carrier=carrier, cards=len(rows))


async def batch_iccids(conn: Connection, batch_id: UUID) -> list[str]:
    """The ICCIDs of an imported batch, in order."""
    return await repository.batch_iccids(conn, batch_id)


async def assign_cards(conn: Connection, body: CardAssignment) -> AssignmentReport:
    """Give a block of unassigned stock (ICCIDs first..last, same length) to a merchant;
    all or nothing."""
    if not await merchants.is_merchant(conn, body.merchant_id):
        raise MerchantNotFound(f"no merchant {body.merchant_id}")
    if len(body.first_iccid) != len(body.last_iccid) or body.first_iccid > body.last_iccid:
        raise ImportRejected("a block runs from a first to a last ICCID of the same length")
    assigned, busy = await repository.assign_block(
        conn, merchant_id=body.merchant_id, first=body.first_iccid, last=body.last_iccid
    )
    if busy:
        raise CardsNotFree(
            f"{busy} card(s) in this block are already assigned or sold; nothing was assigned",
            busy=busy,
        )
    if not assigned:
        raise CardNotFound("no card of the inventory is in this block")
    return AssignmentReport(
        merchant_id=body.merchant_id,
        cards=assigned,
        first_iccid=body.first_iccid,
        last_iccid=body.last_iccid,
    )


async def create_plan(conn: Connection, body: WholesalePlanCreate) -> WholesalePlanPublic:
    """A wholesale plan merchants may sell (its price never changes: make a new plan)."""
    row = await repository.insert_plan(
        conn,
        name=body.name,
        kind=body.kind.value,
        data_bytes=body.data_mb * MB,
        months=body.months,
        wholesale_minor=body.wholesale_minor,
        currency=body.currency,
    )
    return WholesalePlanPublic.model_validate(row)


async def list_plans(
    conn: Connection, *, active: bool | None = None, cursor: str | None, limit: int
) -> Page[WholesalePlanPublic]:
    """One page of the wholesale plans, oldest first: all, or only those on sale (`active`)."""
    after = (
        None
        if cursor is None
        else paging.decode_cursor(cursor, (datetime, UUID), scope=PLANS_SCOPE)
    )
    rows = await repository.list_plans(conn, active=active, after=after, limit=limit)
    found = paging.page(
        rows, limit=limit, key=lambda r: (r.created_at, r.plan_id), scope=PLANS_SCOPE
    )
    return Page[WholesalePlanPublic].model_validate(found, from_attributes=True)


async def set_plan_active(conn: Connection, *, plan_id: UUID, active: bool) -> WholesalePlanPublic:
    """Withdraw a plan from sale (cards on it keep what they paid for) or offer it again."""
    row = await repository.set_plan_active(conn, plan_id, active)
    if row is None:
        raise PlanNotFound(f"no plan {plan_id}")
    return WholesalePlanPublic.model_validate(row)
