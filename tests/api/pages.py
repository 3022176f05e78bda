"""Checks on the pages of a list walked with `tests.conftest.walk_pages`."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import httpx

from flowbill.paging import InvalidCursor
from tests.conftest import assert_problem

Item = dict[str, object]


def assert_each_once_in_order(
    pages: list[list[Item]], *, key: Callable[[Item], object], expected: Sequence[object]
) -> None:
    """The pages (more than one) hold every expected item exactly once and in the expected
    order; items of other tests may lie between them on a shared list, but no item is on two
    pages."""
    assert len(pages) > 1, "the list fit on one page: nothing was paged"
    seen = [key(item) for page in pages for item in page]
    assert len(seen) == len(set(seen)), "an item was handed out twice"
    wanted = set(expected)
    assert [k for k in seen if k in wanted] == list(expected)


def assert_bad_cursor(response: httpx.Response) -> None:
    """The answer to a cursor the list never handed out: the `invalid-cursor` problem."""
    assert_problem(response, InvalidCursor.status, "invalid-cursor")
