"""Schema migrations: numbered plain SQL files in `migrations/`, applied by yoyo under a lock."""

from __future__ import annotations

import logging
from pathlib import Path

from yoyo import get_backend, read_migrations

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"

log = logging.getLogger(__name__)


def _yoyo_url(database_url: str) -> str:
    scheme, sep, rest = database_url.partition("://")
    if not sep or scheme not in {"postgres", "postgresql", "postgresql+psycopg"}:
        raise ValueError("database URL must start with postgresql://")
    return f"postgresql+psycopg://{rest}"


def pending_migrations(database_url: str) -> list[str]:
    """Ids of the migrations not yet applied."""
    backend = get_backend(_yoyo_url(database_url))
    try:
        return [m.id for m in backend.to_apply(read_migrations(str(MIGRATIONS_DIR)))]
    finally:
        backend.connection.close()


def apply_migrations(database_url: str) -> list[str]:
    """Apply every pending migration, each in its own transaction; return their ids."""
    backend = get_backend(_yoyo_url(database_url))
    try:
        with backend.lock():
            todo = backend.to_apply(read_migrations(str(MIGRATIONS_DIR)))
            applied = [m.id for m in todo]
            backend.apply_migrations(todo)
    finally:
        backend.connection.close()
    for migration_id in applied:
        log.info("migration applied", extra={"migration": migration_id})
    return applied
