"""Paging, one way for every list: a `Page[T]` of `{"items": [...], "next_cursor": ...}`, and an
opaque keyset cursor that names the last item handed out (never an offset, so a page stays
right while rows are added). A list fetches `limit + 1` rows after the cursor's key, in the
key's order, and `page()` cuts the extra row off and makes the next cursor from the last item.

A cursor is base64url JSON of `[scope, key...]`. It is not secret and needs no signature: it only
says where to start, and every listing still filters by its caller. The scope (the listing's
name, or a statement line) keeps a cursor from one listing out of another."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from datetime import date, datetime
from typing import Any, Generic, TypeVar
from uuid import UUID

from pydantic import BaseModel, Field

from flowbill.errors import InvalidInput

T = TypeVar("T")
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
MAX_CURSOR_LENGTH = 600

# What a key may hold; each is written to JSON as a string or an integer.
KeyValue = str | int | datetime | date | UUID


class InvalidCursor(InvalidInput):
    type_ = "invalid-cursor"
    title = "Invalid page cursor"


class Page(BaseModel, Generic[T]):
    """One page of a list; pass `next_cursor` as `cursor` to get the next one."""

    items: list[T]
    next_cursor: str | None = Field(
        default=None, description="Pass as `cursor` for the next page; null on the last page."
    )


def _plain(value: KeyValue) -> str | int:
    if isinstance(value, bool):
        raise TypeError("a cursor key holds no booleans")
    if isinstance(value, int | str):
        return value
    return value.isoformat() if isinstance(value, datetime | date) else str(value)


def encode_cursor(key: Sequence[KeyValue], *, scope: str) -> str:
    """The cursor that starts a page after `key`."""
    raw = json.dumps([scope, *(_plain(v) for v in key)], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _typed(value: object, kind: type[Any]) -> KeyValue:
    # Raises ValueError or TypeError for anything this listing never handed out.
    if kind is int:
        if type(value) is not int or not -(2**63) <= value < 2**63:
            raise TypeError("not an integer key")
        return value
    if not isinstance(value, str):
        raise TypeError("not a text key")
    if kind is str:
        return value
    if kind is datetime:
        moment = datetime.fromisoformat(value)
        if moment.tzinfo is None:
            raise ValueError("a moment without its zone")
        return moment
    if kind is date:
        return date.fromisoformat(value)
    if kind is UUID:
        return UUID(value)
    raise TypeError(f"no cursor keys of type {kind.__name__}")


def decode_cursor(cursor: str, kinds: Sequence[type[Any]], *, scope: str) -> tuple[Any, ...]:
    """The key a page starts after, typed as `kinds`; anything but a cursor this listing handed
    out is an `invalid-cursor` problem."""
    invalid = InvalidCursor("the cursor is not one this listing handed out")
    if len(cursor) > MAX_CURSOR_LENGTH:
        raise invalid
    try:
        key = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, binascii.Error):
        raise invalid from None
    if not isinstance(key, list) or len(key) != len(kinds) + 1 or key[0] != scope:
        raise invalid
    try:
        return tuple(_typed(value, kind) for value, kind in zip(key[1:], kinds, strict=True))
    except (ValueError, TypeError):
        raise invalid from None


def page(
    rows: Sequence[T], *, limit: int, key: Callable[[T], Sequence[KeyValue]], scope: str
) -> Page[T]:
    """The page of `rows` (fetched as `limit + 1`): the first `limit`, and a cursor past the
    last of them when there were more."""
    items = list(rows[:limit])
    more = len(rows) > limit and items
    return Page[T](
        items=items, next_cursor=encode_cursor(key(items[-1]), scope=scope) if more else None
    )
