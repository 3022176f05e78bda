"""What a simulation covers: the fleet's size, the span and clock, the seed and the fault rates."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

# Serials are seed * 10**6 + device number: each seed has its own SIMs.
MAX_DEVICES_PER_FLEET = 10**6


@dataclass(frozen=True, kw_only=True)
class SimulationOptions:
    """What to simulate; the rates are shares of reports (0 to 1)."""

    vehicles: int = 50
    iot_sims: int = 20
    minutes: int = 60
    report_interval_minutes: int = 1
    # The first window's start (UTC). None: the span ending at the last whole minute.
    start: datetime | None = None
    seed: int = 1
    duplicate_rate: float = 0.0
    reorder_rate: float = 0.0
    # Held back and sent after everything else.
    late_rate: float = 0.0
    # Chance per report that the device rebooted just before it: a new boot, seq from 0.
    reboot_rate: float = 0.0
    # Malformed messages per report, cycling through every malformation.
    malformed_rate: float = 0.0
    # Reports a device produces but that never reach the broker: sequence gaps to detect.
    loss_rate: float = 0.0
    # Messages per second when publishing; 0 = as fast as the broker takes them.
    rate: float = 0.0

    def __post_init__(self) -> None:
        for name in (
            "duplicate_rate",
            "reorder_rate",
            "late_rate",
            "reboot_rate",
            "malformed_rate",
            "loss_rate",
        ):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")
        for name in ("vehicles", "iot_sims"):
            if not 0 <= getattr(self, name) < MAX_DEVICES_PER_FLEET:
                raise ValueError(f"{name} must be between 0 and {MAX_DEVICES_PER_FLEET - 1}")
        if not 1 <= self.report_interval_minutes <= 60:
            raise ValueError("report_interval_minutes must be between 1 and 60")
        if self.minutes < self.report_interval_minutes:
            raise ValueError("minutes must cover at least one report interval")
        if self.start is not None and self.start.utcoffset() is None:
            raise ValueError("start must carry a time zone")
        if self.rate < 0:
            raise ValueError("rate must be >= 0")

    def plan_start(self, now: datetime | None = None) -> datetime:
        """The first window's start: `start`, or `minutes` before the last whole minute."""
        if self.start is not None:
            return self.start.astimezone(UTC)
        now = (now or datetime.now(UTC)).astimezone(UTC).replace(second=0, microsecond=0)
        return now - timedelta(minutes=self.minutes)
