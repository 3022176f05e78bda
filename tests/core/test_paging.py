"""The one paging convention: cursors that round-trip, refuse anything else, and pages that
hand out every item exactly once."""

from __future__ import annotations

import base64
import json
from datetime import UTC, date, datetime
from uuid import UUID

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flowbill.paging import InvalidCursor, Page, decode_cursor, encode_cursor, page

moments = st.datetimes(timezones=st.just(UTC))
keys = st.tuples(moments, st.uuids(), st.integers(-(2**63), 2**63 - 1), st.text(max_size=40))
KINDS = (datetime, UUID, int, str)


@given(keys)
def test_a_cursor_gives_back_the_key_it_was_made_from(key: tuple[datetime, UUID, int, str]) -> None:
    cursor = encode_cursor(key, scope="listing")
    assert decode_cursor(cursor, KINDS, scope="listing") == key


def test_dates_round_trip() -> None:
    cursor = encode_cursor((date(2026, 11, 30), 7), scope="days")
    assert decode_cursor(cursor, (date, int), scope="days") == (date(2026, 11, 30), 7)


@given(keys)
def test_a_cursor_of_another_listing_is_refused(key: tuple[datetime, UUID, int, str]) -> None:
    with pytest.raises(InvalidCursor):
        decode_cursor(encode_cursor(key, scope="vehicles"), KINDS, scope="invoices")


def _raw(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "!!!",
        "not base64 at all",
        _raw({"scope": "listing"}),
        _raw(["listing"]),  # too short
        _raw(["listing", "2026-11-01T00:00:00+00:00", str(UUID(int=1)), 1, "a", "extra"]),
        _raw(["listing", "2026-11-01T00:00:00", str(UUID(int=1)), 1, "a"]),  # no zone
        _raw(["listing", "yesterday", str(UUID(int=1)), 1, "a"]),
        _raw(["listing", "2026-11-01T00:00:00+00:00", "not-a-uuid", 1, "a"]),
        _raw(["listing", "2026-11-01T00:00:00+00:00", str(UUID(int=1)), "1", "a"]),
        _raw(["listing", "2026-11-01T00:00:00+00:00", str(UUID(int=1)), True, "a"]),
        _raw(["listing", "2026-11-01T00:00:00+00:00", str(UUID(int=1)), 2**64, "a"]),
        _raw(["listing", "2026-11-01T00:00:00+00:00", str(UUID(int=1)), 1, 5]),
        "A" * 601,
    ],
)
def test_anything_but_a_handed_out_cursor_is_an_invalid_cursor_problem(cursor: str) -> None:
    with pytest.raises(InvalidCursor) as raised:
        decode_cursor(cursor, KINDS, scope="listing")
    assert raised.value.type_ == "invalid-cursor"


@given(st.lists(st.integers(-(2**63), 2**63 - 1), unique=True, max_size=60), st.integers(1, 12))
def test_walking_the_pages_hands_out_every_item_once_in_order(items: list[int], limit: int) -> None:
    ordered = sorted(items)
    seen: list[int] = []
    after: int | None = None
    while True:
        # What a repository does: the rows after the cursor's key, limit + 1 of them.
        rows = [i for i in ordered if after is None or i > after][: limit + 1]
        got: Page[int] = page(rows, limit=limit, key=lambda i: (i,), scope="numbers")
        assert len(got.items) <= limit
        seen.extend(got.items)
        if got.next_cursor is None:
            break
        assert got.items
        (after,) = decode_cursor(got.next_cursor, (int,), scope="numbers")
    assert seen == ordered


def test_a_full_last_page_has_no_next_cursor() -> None:
    got = page([1, 2, 3], limit=3, key=lambda i: (i,), scope="numbers")
    assert got.items == [1, 2, 3]
    assert got.next_cursor is None
    assert page([], limit=3, key=lambda i: (i,), scope="numbers").model_dump() == {
        "items": [],
        "next_cursor": None,
    }
