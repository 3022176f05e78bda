"""The `flowbill` command line against the real database."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from flowbill.migrate import apply_migrations, pending_migrations
from flowbill.settings import CALLBACK_PARTIES, Settings


def run(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FLOWBILL_DATABASE_URL": settings.database_dsn}
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip


def test_migrate_is_idempotent(settings: Settings) -> None:
    assert pending_migrations(settings.database_dsn) == []
    assert apply_migrations(settings.database_dsn) == []
    result = run(settings, "migrate")
    assert result.returncode == 0, result.stderr
    assert "migrations applied: 0" in result.stdout


async def test_create_operator_key_gives_a_working_key(
    settings: Settings, tmp_path: Path, http: httpx.AsyncClient
) -> None:
    key_file = tmp_path / "operator.key"
    result = run(settings, "create-operator-key", "--name", "ops", "--key-file", str(key_file))
    assert result.returncode == 0, result.stderr
    key = key_file.read_text().strip()
    assert key not in result.stdout + result.stderr  # shown once, in the file only
    me = await http.get("/v1/me", headers={"Authorization": f"Bearer {key}"})
    assert me.json()["role"] == "operator"


def test_retention_and_compaction_commands_run(settings: Settings) -> None:
    result = run(settings, "retention", "--keep-days", "400")
    assert result.returncode == 0, result.stderr
    assert '"chunks_dropped"' in result.stdout
    result = run(settings, "compact-rollups")
    assert result.returncode == 0, result.stderr


def test_production_refuses_placeholder_secrets() -> None:
    real = {
        "environment": "production",
        "database_url": "postgresql://x@localhost/x",
        "mqtt_password": "a-real-secret",
        **{
            f"{party}_callback_secret": f"a-real-{party}-callback-secret-of-32-bytes"
            for party in CALLBACK_PARTIES
        },
        "iot_id_hash_key": "k" * 32,
    }
    for name, placeholder in [
        ("mqtt_password", "changeme"),
        ("payment_callback_secret", "change-me"),
        ("identity_callback_secret", "too-short-for-a-callback-secret"),
        ("iot_id_hash_key", "change-me"),
        ("iot_id_hash_key", "too-short-for-a-key"),
    ]:
        with pytest.raises(ValidationError, match=f"FLOWBILL_{name.upper()}"):
            Settings(**{**real, name: placeholder})  # type: ignore[arg-type]
    Settings(**real)  # type: ignore[arg-type]


def test_settings_reject_bad_values() -> None:
    with pytest.raises(ValidationError):
        Settings(database_url="postgresql://x@localhost/x", mqtt_port=70000)  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        Settings(database_url="postgresql://x@localhost/x", ingest_share_group="a/b")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="time zone"):
        Settings(database_url="postgresql://x@localhost/x", billing_time_zone="Mars/Olympus")  # type: ignore[arg-type]


def test_ledger_check_proves_the_books(settings: Settings) -> None:
    result = run(settings, "ledger", "check")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "the books balance" in result.stdout
