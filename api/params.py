"""Path and query parameters that several audiences' routers share: one `Limit` and one
`Cursor` for every list, months, statement lines."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query

from flowbill.paging import MAX_CURSOR_LENGTH, MAX_LIMIT

PeriodPath = Annotated[str, Path(max_length=20, description="A month, YYYY-MM (billing zone).")]
LineIdPath = Annotated[str, Path(max_length=120, description="A statement line's `line_id`.")]

# Paging (flowbill.paging): every list takes `limit` and `cursor` and answers a `Page`.
Limit = Annotated[
    int, Query(ge=1, le=MAX_LIMIT, description=f"At most this many items (1–{MAX_LIMIT}).")
]
Cursor = Annotated[
    str | None,
    Query(
        max_length=MAX_CURSOR_LENGTH,
        description="The `next_cursor` of the page before; leave out for the first page.",
    ),
]
