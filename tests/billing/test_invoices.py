"""Invoices and credit notes: closing a period, immutability, gap-free numbers, limits."""

from __future__ import annotations

import asyncio
import re
import secrets
from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import httpx
import psycopg
import pytest

from billing.documents import invoices, statements
from billing.documents.errors import MixedCurrencies, PeriodNotClosable
from billing.documents.schemas import CreditLineCreate, CreditNoteCreate
from flowbill.db import Connection
from flowbill.periods import Calendar
from flowbill.settings import Settings
from flowbill.units import MB
from tenants.schemas import Role
from tests.billing import statement_factories as f
from tests.conftest import assert_bad_cursor, assert_problem, bearer, make_tenant, walk_pages

CALENDAR = Calendar.of(time_zone="Asia/Shanghai", closing_days=3)


def _year() -> int:
    return CALENDAR.period_of(datetime.now(UTC)).year


def _close_url(sponsor_id: str, period: str) -> str:
    return f"/v1/operator/billing/sponsors/{sponsor_id}/periods/{period}/close"


def _idem(headers: dict[str, str], key: str | None = None) -> dict[str, str]:
    return {**headers, "Idempotency-Key": key or secrets.token_hex(8)}


async def _sponsor(
    settings: Settings,
    *,
    period: date,
    sizes: tuple[int, ...] = (3 * MB, 2 * MB),
    unit_price: str = "1",
    currencies: tuple[str, ...] = ("CNY",),
) -> tuple[str, dict[str, str]]:
    """A sponsor with one policy per currency and one line per size (distinct categories)."""
    sponsor_id, key = await make_tenant(settings, role=Role.SPONSOR)
    categories = ("navigation", "map_update", "traffic_info", "telematics", "backend")
    async with f.committed(settings) as conn:
        for currency in currencies:
            policy = await f.policy(conn, sponsor_id=UUID(sponsor_id), unit_price=unit_price,
                                    currency=currency, categories=categories)  # fmt: skip
            for size, category in zip(sizes, categories, strict=False):
                await f.allocate(conn, window_start=f.at(period), app=f.app_id(),
                                 category=category, data_bytes=size, policy=policy)  # fmt: skip
    return sponsor_id, bearer(key)


async def test_closing_issues_one_invoice_copied_from_the_statement(
    http: httpx.AsyncClient, settings: Settings, operator_key: str
) -> None:
    operator = bearer(operator_key)
    sponsor_id, headers = await _sponsor(settings, period=date(2025, 9, 1))
    statement = (await http.get("/v1/sponsor/statements/2025-09", headers=headers)).json()
    assert statement["status"] == "closable"
    key = secrets.token_hex(8)
    closed = await http.post(_close_url(sponsor_id, "2025-09"), headers=_idem(operator, key))
    assert closed.status_code == 201, closed.text
    invoice = closed.json()
    assert re.fullmatch(rf"FB-{_year()}-[0-9]{{6}}", invoice["number"])
    assert invoice["sponsor_id"] == sponsor_id
    assert (invoice["period"], invoice["currency"]) == ("2025-09", "CNY")
    assert invoice["total_minor"] == statement["totals"][0]["amount_minor"] == 500
    assert invoice["total"] == "5.00"
    assert (invoice["credited_minor"], invoice["balance_minor"]) == (0, 500)
    assert [ln["line_no"] for ln in invoice["lines"]] == [1, 2]
    for stored, line in zip(invoice["lines"], statement["lines"], strict=True):
        for field in (
            "line_id", "policy_id", "policy_name", "category", "bytes", "rated_bytes", "mb",
            "unit_price", "amount_minor", "amount", "adjustment", "used_in",
        ):  # fmt: skip
            assert stored[field] == line[field], field

    # The statement says it is invoiced; closing again answers with the same invoice.
    after = (await http.get("/v1/sponsor/statements/2025-09", headers=headers)).json()
    assert (after["status"], after["invoice_number"]) == ("invoiced", invoice["number"])
    for again_key in (key, secrets.token_hex(8)):
        again = await http.post(
            _close_url(sponsor_id, "2025-09"), headers=_idem(operator, again_key)
        )
        assert again.status_code == 201, again.text
        assert again.json() == invoice
    other_id, _ = await _sponsor(settings, period=date(2025, 9, 1))
    reused = await http.post(_close_url(other_id, "2025-09"), headers=_idem(operator, key))
    assert_problem(reused, 409, "idempotency-key-reused")

    # The sponsor reads it; nobody else does.
    mine = await http.get("/v1/sponsor/invoices", headers=headers)
    assert [i["number"] for i in mine.json()["items"]] == [invoice["number"]]
    own = await http.get(f"/v1/sponsor/invoices/{invoice['number']}", headers=headers)
    assert own.json() == invoice
    _, stranger_key = await make_tenant(settings, role=Role.SPONSOR)
    stranger = bearer(stranger_key)
    for path in ("", "/credit-notes"):
        peek = await http.get(f"/v1/sponsor/invoices/{invoice['number']}{path}", headers=stranger)
        assert_problem(peek, 404, "invoice-not-found")
    assert (await http.get("/v1/sponsor/invoices", headers=stranger)).json() == {
        "items": [], "next_cursor": None
    }  # fmt: skip
    bad = await http.get("/v1/sponsor/invoices/FB-2026-12x", headers=headers)
    assert_problem(bad, 422, "invalid-input")
    listed = await http.get(
        "/v1/operator/billing/invoices", params={"sponsor_id": sponsor_id}, headers=operator
    )
    assert [i["number"] for i in listed.json()["items"]] == [invoice["number"]]

    # Usage booked in the month afterwards (which the run never does) changes the statement,
    # never the invoice.
    async with f.committed(settings) as conn:
        late = await f.policy(conn, sponsor_id=UUID(sponsor_id))
        await f.allocate(conn, window_start=f.at(date(2025, 9, 1)), app=f.app_id(),
                         category="navigation", data_bytes=MB, policy=late)  # fmt: skip
    kept = await http.get(f"/v1/operator/billing/invoices/{invoice['number']}", headers=operator)
    assert kept.json() == invoice


async def test_closing_waits_for_the_closing_window(
    http: httpx.AsyncClient, settings: Settings, operator_key: str, conn: Connection
) -> None:
    operator = bearer(operator_key)
    sponsor_id, _ = await make_tenant(settings, role=Role.SPONSOR)
    current = CALENDAR.period_of(datetime.now(UTC))
    early = await http.post(_close_url(sponsor_id, f"{current:%Y-%m}"), headers=_idem(operator))
    body = assert_problem(early, 409, "period-not-closable")
    assert datetime.fromisoformat(str(body["closable_at"])) == CALENDAR.closable_at(current)
    future = date(current.year + 1, current.month, 1)
    later = await http.post(_close_url(sponsor_id, f"{future:%Y-%m}"), headers=_idem(operator))
    assert_problem(later, 422, "period-in-future")
    nobody = await http.post(_close_url(str(uuid4()), "2025-01"), headers=_idem(operator))
    assert_problem(nobody, 404, "sponsor-not-found")
    unkeyed = await http.post(_close_url(sponsor_id, "2025-01"), headers=operator)
    assert_problem(unkeyed, 422, "invalid-input")
    sponsor_key = (await make_tenant(settings, role=Role.SPONSOR))[1]
    forbidden = await http.post(
        _close_url(sponsor_id, "2025-01"), headers=_idem(bearer(sponsor_key))
    )
    assert_problem(forbidden, 403, "role-not-allowed")

    # To the microsecond: November 2026 closes at 2026-12-04 00:00 in Shanghai.
    sponsor = await f.tenant(conn, role=Role.SPONSOR)
    period = date(2026, 11, 1)
    opens = datetime(2026, 12, 3, 16, tzinfo=UTC)
    with pytest.raises(PeriodNotClosable) as refused:
        await invoices.close_period(
            conn, sponsor_id=sponsor, period=period, key="k1", calendar=CALENDAR,
            now=opens - timedelta(microseconds=1),
        )  # fmt: skip
    assert refused.value.extensions["closable_at"] == opens.isoformat()
    issued = await invoices.close_period(
        conn, sponsor_id=sponsor, period=period, key="k2", calendar=CALENDAR, now=opens
    )
    assert (issued.total_minor, issued.lines, issued.issue_date) == (0, [], date(2026, 12, 4))


async def test_issued_documents_never_change(conn: Connection) -> None:
    period = date(2025, 3, 1)
    sponsor = await f.tenant(conn, role=Role.SPONSOR)
    policy = await f.policy(conn, sponsor_id=sponsor, unit_price="1")
    await f.allocate(conn, window_start=f.at(period), app=f.app_id(), category="navigation",
                     data_bytes=2 * MB, policy=policy)  # fmt: skip
    now = datetime.now(UTC)
    invoice = await invoices.close_period(
        conn, sponsor_id=sponsor, period=period, key=secrets.token_hex(6), calendar=CALENDAR,
        now=now,
    )  # fmt: skip
    note = await invoices.issue_credit_note(
        conn, invoice_number=invoice.number, key=secrets.token_hex(6), calendar=CALENDAR,
        now=now, request=CreditNoteCreate(
            reason="goodwill", lines=[CreditLineCreate(line_no=1, amount_minor=50)]
        ),
    )  # fmt: skip
    changes = [
        ("UPDATE invoices SET total_minor = 0 WHERE number = %s", invoice.number),
        ("DELETE FROM invoices WHERE number = %s", invoice.number),
        (
            "UPDATE invoice_lines SET amount_minor = 1 WHERE invoice_id ="
            " (SELECT invoice_id FROM invoices WHERE number = %s)",
            invoice.number,
        ),
        (
            "DELETE FROM invoice_lines WHERE invoice_id ="
            " (SELECT invoice_id FROM invoices WHERE number = %s)",
            invoice.number,
        ),
        ("UPDATE credit_notes SET reason = 'x' WHERE number = %s", note.number),
        (
            "DELETE FROM credit_note_lines WHERE credit_note_id ="
            " (SELECT credit_note_id FROM credit_notes WHERE number = %s)",
            note.number,
        ),
    ]
    for sql, number in changes:
        with pytest.raises(psycopg.errors.RestrictViolation, match="never change"):
            async with conn.transaction():
                await conn.execute(sql, (number,))
    for table in ("invoices", "invoice_lines", "credit_notes", "credit_note_lines"):
        with pytest.raises(psycopg.errors.RestrictViolation):
            async with conn.transaction():
                await conn.execute(f"TRUNCATE {table} CASCADE")
    again = await invoices.invoice(conn, number=invoice.number, sponsor_id=None)
    assert (again.total_minor, again.credited_minor, again.balance_minor) == (200, 50, 150)
    # The database's own guard against crediting beyond a line (the service checks first).
    cur = await conn.execute(
        "SELECT invoice_id FROM credit_notes WHERE number = %s", (note.number,)
    )
    row = await cur.fetchone()
    assert row is not None
    await conn.execute(
        "INSERT INTO credit_notes (number, invoice_id, reason, currency, total_minor,"
        " issue_date) VALUES ('CN-1999-999999', %s, 'x', 'CNY', 151, current_date)",
        (row[0],),
    )
    with pytest.raises(psycopg.errors.CheckViolation, match="exceeds"):
        async with conn.transaction():
            await conn.execute(
                "INSERT INTO credit_note_lines (credit_note_id, invoice_id, line_no, amount_minor)"
                " SELECT credit_note_id, invoice_id, 1, 151 FROM credit_notes"
                " WHERE number = 'CN-1999-999999'"
            )


async def test_one_invoice_has_one_currency(conn: Connection) -> None:
    period = date(2025, 3, 1)
    sponsor = await f.tenant(conn, role=Role.SPONSOR)
    for currency in ("CNY", "USD"):
        policy = await f.policy(conn, sponsor_id=sponsor, currency=currency)
        await f.allocate(conn, window_start=f.at(period), app=f.app_id(),
                         category="navigation", data_bytes=MB, policy=policy)  # fmt: skip
    with pytest.raises(MixedCurrencies):
        await invoices.close_period(conn, sponsor_id=sponsor, period=period, key="mixed",
                                    calendar=CALENDAR, now=datetime.now(UTC))  # fmt: skip
    # A month without usage is closed by an invoice for nothing, in the policies' currency.
    dollars = await f.tenant(conn, role=Role.SPONSOR)
    await f.policy(conn, sponsor_id=dollars, currency="USD")
    empty = await invoices.close_period(conn, sponsor_id=dollars, period=period, key="empty",
                                        calendar=CALENDAR, now=datetime.now(UTC))  # fmt: skip
    assert (empty.currency, empty.total_minor, empty.lines) == ("USD", 0, [])


async def test_numbers_are_gap_free_under_concurrent_closes(
    http: httpx.AsyncClient,
    settings: Settings,
    operator_key: str,
    committed_conn: psycopg.AsyncConnection[Any],
) -> None:
    operator = bearer(operator_key)
    period = date(2025, 10, 1)
    sponsors = [(await _sponsor(settings, period=period))[0] for _ in range(6)]
    same = sponsors[0]
    # One close fails (two currencies): it must not take a number.
    failing, _ = await _sponsor(settings, period=period, currencies=("CNY", "USD"))
    closes = [*sponsors, same, same, same, failing]
    answers = await asyncio.gather(
        *(http.post(_close_url(s, "2025-10"), headers=_idem(operator)) for s in closes)
    )
    assert_problem(answers[-1], 409, "mixed-currencies")
    numbers = [a.json()["number"] for a in answers[:-1]]
    assert all(a.status_code == 201 for a in answers[:-1]), [a.text for a in answers]
    assert len(set(numbers[:6])) == 6
    assert set(numbers[6:]) == {numbers[0]}
    year = _year()
    cur = await committed_conn.execute(
        "SELECT number FROM invoices WHERE number LIKE %s", (f"FB-{year}-%",)
    )
    taken = sorted(int(str(row[0]).rsplit("-", 1)[1]) for row in await cur.fetchall())
    assert taken == list(range(1, len(taken) + 1))
    cur = await committed_conn.execute(
        "SELECT last_number FROM document_counters WHERE series = 'FB' AND year = %s", (year,)
    )
    row = await cur.fetchone()
    assert row is not None
    assert row[0] == len(taken)


async def test_credit_notes_never_exceed_what_is_left(
    http: httpx.AsyncClient,
    settings: Settings,
    operator_key: str,
    committed_conn: psycopg.AsyncConnection[Any],
) -> None:
    operator = bearer(operator_key)
    # Lines in category order: map_update (3 MB, 300 fen), navigation (2 MB, 200 fen).
    sponsor_id, headers = await _sponsor(settings, period=date(2025, 11, 1), sizes=(2 * MB, 3 * MB))
    invoice = (await http.post(_close_url(sponsor_id, "2025-11"), headers=_idem(operator))).json()
    assert [ln["amount_minor"] for ln in invoice["lines"]] == [300, 200]
    url = f"/v1/operator/billing/invoices/{invoice['number']}/credit-notes"

    async def credit(lines: list[tuple[int, int]], key: str | None = None) -> httpx.Response:
        body = {"reason": "traffic double counted",
                "lines": [{"line_no": n, "amount_minor": a} for n, a in lines]}  # fmt: skip
        return await http.post(url, json=body, headers=_idem(operator, key))

    first_key = secrets.token_hex(8)
    first = await credit([(1, 120)], first_key)
    assert first.status_code == 201, first.text
    note = first.json()
    assert re.fullmatch(rf"CN-{_year()}-[0-9]{{6}}", note["number"])
    assert (note["invoice_number"], note["total_minor"], note["total"]) == (
        invoice["number"], 120, "1.20"
    )  # fmt: skip
    assert note["lines"] == [
        {"line_no": 1, "line_id": invoice["lines"][0]["line_id"], "amount_minor": 120,
         "amount": "1.20"}
    ]  # fmt: skip
    assert (await credit([(1, 120)], first_key)).json() == note  # a repeat issues nothing
    assert_problem(await credit([(1, 121)], first_key), 409, "idempotency-key-reused")

    too_much = await credit([(2, 10), (1, 181)])
    body = assert_problem(too_much, 409, "credit-exceeds-line")
    assert (body["line_no"], body["left_minor"]) == (1, 180)
    second = await credit([(1, 180), (2, 200)])
    assert second.status_code == 201, second.text
    for lines in ([(1, 1)], [(2, 1)]):
        assert_problem(await credit(lines), 409, "credit-exceeds-line")
    assert_problem(await credit([(3, 1)]), 422, "invalid-credit-note")
    for bad in ([(1, 0)], [(1, -5)], [(1, 1), (1, 1)], []):
        assert_problem(await credit(bad), 422, "invalid-input")
    unknown = await http.post(
        "/v1/operator/billing/invoices/FB-1999-000001/credit-notes",
        json={"reason": "x", "lines": [{"line_no": 1, "amount_minor": 1}]},
        headers=_idem(operator),
    )
    assert_problem(unknown, 404, "invoice-not-found")

    # The invoice is as issued; what was credited is beside it.
    seen = (await http.get(f"/v1/sponsor/invoices/{invoice['number']}", headers=headers)).json()
    assert seen["total_minor"] == invoice["total_minor"] == 500
    assert (seen["credited_minor"], seen["balance_minor"]) == (500, 0)
    assert [ln["credited_minor"] for ln in seen["lines"]] == [300, 200]
    notes = await http.get(f"/v1/sponsor/invoices/{invoice['number']}/credit-notes",
                           headers=headers)  # fmt: skip
    assert [n["number"] for n in notes.json()["items"]] == [
        note["number"], second.json()["number"]
    ]  # fmt: skip
    own = await http.get(f"/v1/sponsor/credit-notes/{note['number']}", headers=headers)
    assert own.json() == note
    _, stranger = await make_tenant(settings, role=Role.SPONSOR)
    peek = await http.get(f"/v1/sponsor/credit-notes/{note['number']}", headers=bearer(stranger))
    assert_problem(peek, 404, "credit-note-not-found")
    cur = await committed_conn.execute(
        "SELECT number FROM credit_notes WHERE number LIKE %s", (f"CN-{_year()}-%",)
    )
    taken = sorted(int(str(row[0]).rsplit("-", 1)[1]) for row in await cur.fetchall())
    assert taken == list(range(1, len(taken) + 1))


async def test_invoices_and_credit_notes_page_through(
    http: httpx.AsyncClient, settings: Settings, operator_key: str
) -> None:
    operator = bearer(operator_key)
    months = ["2024-01", "2024-02", "2024-03", "2024-04", "2024-05"]
    sponsor_id, headers = await _sponsor(settings, period=date(2024, 1, 1))
    issued = []
    for month in months:
        closed = await http.post(_close_url(sponsor_id, month), headers=_idem(operator))
        assert closed.status_code == 201, closed.text
        issued.append(closed.json())
    newest_first = [i["number"] for i in reversed(issued)]
    _, sponsor_key = headers["Authorization"].split(" ", 1)
    for key, path, params in (
        (sponsor_key, "/v1/sponsor/invoices", {}),
        (operator_key, "/v1/operator/billing/invoices", {"sponsor_id": sponsor_id}),
    ):
        pages = await walk_pages(http, path, key=key, limit=2, params=params)
        assert [len(page) for page in pages] == [2, 2, 1]
        assert [i["number"] for page in pages for i in page] == newest_first
        assert pages[-1][-1] == {
            k: v for k, v in issued[0].items() if k not in ("lines", "time_zone")
        }
    one_month = await walk_pages(http, "/v1/sponsor/invoices", key=sponsor_key, limit=2,
                                 params={"period": "2024-03"})  # fmt: skip
    assert [i["number"] for page in one_month for i in page] == [issued[2]["number"]]

    # Five credit notes of the first month's invoice (its first line has 200 fen).
    invoice = issued[0]["number"]
    notes = []
    for n in range(5):
        note = await http.post(
            f"/v1/operator/billing/invoices/{invoice}/credit-notes",
            json={"reason": f"goodwill {n}", "lines": [{"line_no": 1, "amount_minor": 10}]},
            headers=_idem(operator),
        )
        assert note.status_code == 201, note.text
        notes.append(note.json())
    for key, path in (
        (sponsor_key, f"/v1/sponsor/invoices/{invoice}/credit-notes"),
        (operator_key, f"/v1/operator/billing/invoices/{invoice}/credit-notes"),
    ):
        pages = await walk_pages(http, path, key=key, limit=2)
        assert [len(page) for page in pages] == [2, 2, 1]
        assert [n for page in pages for n in page] == notes

    # A cursor is the listing's own: garbage, or one from another listing, is refused.
    notes_url = f"/v1/sponsor/invoices/{invoice}/credit-notes"
    notes_cursor = (await http.get(notes_url, params={"limit": 1}, headers=headers)).json()[
        "next_cursor"
    ]
    invoices_cursor = (
        await http.get("/v1/sponsor/invoices", params={"limit": 1}, headers=headers)
    ).json()["next_cursor"]
    for path, cursor in (
        ("/v1/sponsor/invoices", "garbage!"),
        ("/v1/sponsor/invoices", notes_cursor),
        ("/v1/operator/billing/invoices", invoices_cursor[:-2]),
        (f"/v1/sponsor/invoices/{invoice}/credit-notes", invoices_cursor),
        (f"/v1/operator/billing/invoices/{invoice}/credit-notes", "W10"),
    ):
        who = operator if "operator" in path else headers
        refused = await http.get(path, params={"cursor": cursor}, headers=who)
        assert_bad_cursor(refused)


def test_document_numbers() -> None:
    assert invoices.document_number("FB", 2026, 1) == "FB-2026-000001"
    assert invoices.document_number("CN", 2026, 1_234_567) == "CN-2026-1234567"
    assert statements.CSV_COLUMNS[0] == "period"
