"""`flowbill simulate`'s command-line options and the SimulationOptions they make."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

from simulator.fleet.options import SimulationOptions


def _share(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not between 0 and 1")
    return value


def _utc_datetime(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 time") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The simulator's command-line options."""
    parser.add_argument("--vehicles", type=int, default=50, help="vehicles (default 50)")
    parser.add_argument("--iot-sims", type=int, default=20, help="IoT SIMs (default 20)")
    parser.add_argument("--minutes", type=int, default=60, help="simulated minutes (default 60)")
    parser.add_argument("--interval", type=int, default=1, help="minutes per report (default 1)")
    parser.add_argument(
        "--start",
        type=_utc_datetime,
        help="first window's start, ISO 8601, UTC unless an offset is given "
        "(default: the span ending at the last whole minute)",
    )
    parser.add_argument(
        "--rate", type=float, default=0.0, help="messages/s; 0 = as fast as possible (default)"
    )
    parser.add_argument("--seed", type=int, default=1, help="same seed, same fleet (default 1)")
    parser.add_argument(
        "--duplicates", type=_share, default=0.0, help="share of reports sent twice"
    )
    parser.add_argument(
        "--reorder", type=_share, default=0.0, help="chance a message swaps with the next"
    )
    parser.add_argument(
        "--late", type=_share, default=0.0, help="share of reports sent after all others"
    )
    parser.add_argument("--reboots", type=_share, default=0.0, help="reboot chance per report")
    parser.add_argument(
        "--malformed", type=_share, default=0.0, help="malformed messages per report"
    )
    parser.add_argument(
        "--loss", type=_share, default=0.0, help="share of reports never sent (sequence gaps)"
    )


def options_from_args(args: argparse.Namespace) -> SimulationOptions:
    """SimulationOptions from options parsed with `add_arguments`."""
    return SimulationOptions(
        vehicles=args.vehicles,
        iot_sims=args.iot_sims,
        minutes=args.minutes,
        report_interval_minutes=args.interval,
        start=args.start,
        rate=args.rate,
        seed=args.seed,
        duplicate_rate=args.duplicates,
        reorder_rate=args.reorder,
        late_rate=args.late,
        reboot_rate=args.reboots,
        malformed_rate=args.malformed,
        loss_rate=args.loss,
    )
