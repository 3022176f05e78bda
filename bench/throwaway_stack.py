"""The benchmarks' own stack: a fresh PostgreSQL+TimescaleDB and Mosquitto per run, so no
other data or broker session can skew the figures; and the line that names the machine."""

from __future__ import annotations

import os
import platform
import shutil
from pathlib import Path

from devstack import localstack
from flowbill.migrate import apply_migrations
from flowbill.settings import Settings


def fresh_stack(state: Path) -> Settings:
    """Start a migrated stack under `state` (anything there before is removed)."""
    localstack.down(state)
    shutil.rmtree(state, ignore_errors=True)
    stack = localstack.up(state)
    apply_migrations(stack.database_url)
    return Settings(**{**stack.settings_values(), "environment": "test"})  # type: ignore[arg-type]


def machine() -> str:
    """Cores, CPU model and Python version, for the first line of every report."""
    model = platform.processor()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return f"machine: {os.cpu_count()} cores, {model}; Python {platform.python_version()}"
