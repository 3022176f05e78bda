"""The app catalogue: which app ids devices report belong to which category. An app the
catalogue does not know is still stored and billed (to the user); policies pay by app or by
category."""

from __future__ import annotations

from flowbill import paging
from flowbill.db import Connection
from flowbill.paging import Page
from sponsors import catalogue_repository as repository
from sponsors.errors import AppNotFound
from sponsors.schemas import CatalogueApp, CatalogueAppUpdate


async def set_app(conn: Connection, *, app: str, body: CatalogueAppUpdate) -> CatalogueApp:
    """Add an app to the catalogue or change its category."""
    return CatalogueApp.model_validate(
        await repository.upsert_app(conn, app=app, category=body.category.value, name=body.name)
    )


async def catalogue(conn: Connection, *, limit: int, cursor: str | None) -> Page[CatalogueApp]:
    """The apps the catalogue knows, by app id, a page at a time; others are unclassified."""
    (after,) = paging.decode_cursor(cursor, (str,), scope="catalogue") if cursor else (None,)
    rows = await repository.catalogue(conn, after=after, limit=limit + 1)
    return paging.page(
        [CatalogueApp.model_validate(r) for r in rows],
        limit=limit, key=lambda a: (a.app,), scope="catalogue",
    )  # fmt: skip


async def remove_app(conn: Connection, app: str) -> None:
    """Forget an app: from now on its traffic is unclassified (the user's)."""
    if not await repository.delete_app(conn, app):
        raise AppNotFound(f"the catalogue has no app {app!r}")


async def categories(conn: Connection) -> dict[str, str]:
    """App id → category, for the allocation run."""
    return {r.app: r.category for r in await repository.catalogue(conn)}


async def catalogue_apps(conn: Connection) -> list[tuple[str, str]]:
    """(app, category) of every catalogued app."""
    return [(r.app, r.category) for r in await repository.catalogue(conn)]
