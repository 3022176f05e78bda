"""What a plan sends, counted: per-app totals over distinct reports, duplicates, malformed and
lost messages, and the table that shows them."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from flowbill.units import MB
from simulator.fleet.plan import FleetPlan, PlannedMessage


@dataclass(slots=True)
class AppTotals:
    items: int = 0
    up: int = 0
    down: int = 0


@dataclass
class SimulationSummary:
    """What a simulation sent: each distinct report counted once, however often it was sent."""

    per_app: dict[str, AppTotals] = field(default_factory=dict)
    reports: int = 0
    duplicates: int = 0
    # Malformed messages sent, by the reason the ingest will reject them with.
    malformed: Counter[str] = field(default_factory=Counter)
    lost: int = 0
    messages: int = 0
    elapsed_seconds: float = 0.0

    @property
    def messages_per_second(self) -> float:
        return self.messages / self.elapsed_seconds if self.elapsed_seconds else 0.0

    def as_table(self) -> str:
        """Per app: items, MB and exact bytes up and down; then totals and message counts."""
        header = (
            f"{'app':<20} {'items':>10} {'MB up':>10} {'MB down':>11} "
            f"{'bytes up':>15} {'bytes down':>17}"
        )
        lines = [header, "-" * len(header)]
        total = AppTotals()
        for app in sorted(self.per_app):
            totals = self.per_app[app]
            total.items += totals.items
            total.up += totals.up
            total.down += totals.down
            lines.append(_table_row(app, totals))
        lines += ["-" * len(header), _table_row("total", total), ""]
        lines.append(
            f"distinct reports: {self.reports:,}   duplicates sent: {self.duplicates:,}   "
            f"lost (never sent): {self.lost:,}"
        )
        malformed = ", ".join(f"{reason}={n:,}" for reason, n in sorted(self.malformed.items()))
        lines.append(
            f"malformed sent: {sum(self.malformed.values()):,}"
            + (f" ({malformed})" if malformed else "")
        )
        published = f"messages published: {self.messages:,}"
        if self.elapsed_seconds:
            published += (
                f" in {self.elapsed_seconds:,.2f} s ({self.messages_per_second:,.0f} msg/s)"
            )
        lines.append(published)
        return "\n".join(lines)


def _table_row(label: str, totals: AppTotals) -> str:
    return (
        f"{label:<20} {totals.items:>10,} {totals.up / MB:>10.2f} {totals.down / MB:>11.2f} "
        f"{totals.up:>15,} {totals.down:>17,}"
    )


def summarize(messages: Sequence[PlannedMessage]) -> SimulationSummary:
    """What a plan sends: per-app totals over distinct reports, duplicates, malformed."""
    summary = SimulationSummary(
        messages=len(messages), lost=messages.lost if isinstance(messages, FleetPlan) else 0
    )
    per_app = summary.per_app
    for message in messages:
        if message.kind == "duplicate":
            summary.duplicates += 1
        elif message.kind == "malformed":
            summary.malformed[str(message.expected_reason)] += 1
        elif message.report is not None:
            summary.reports += 1
            for item in message.report.apps:
                totals = per_app.get(item.app)
                if totals is None:
                    totals = per_app[item.app] = AppTotals()
                totals.items += 1
                totals.up += item.up
                totals.down += item.down
    return summary
