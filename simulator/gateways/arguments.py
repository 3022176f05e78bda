"""`flowbill gateway-simulator`'s behaviour options and the GatewayBehaviour they make."""

from __future__ import annotations

import argparse

from simulator.gateways.behaviour import GatewayBehaviour


def _share(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not between 0 and 1")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 3600.0:
        raise argparse.ArgumentTypeError(f"{text} is not between 0 and 3600 seconds")
    return value


def _megabytes(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 100_000:
        raise argparse.ArgumentTypeError(f"{text} is not between 0 and 100000 MB")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The simulated parties' behaviour as command-line options (host, port and the callback
    secret are the command's own)."""
    parser.add_argument("--seed", type=int, default=0, help="seed of the random draws")
    parser.add_argument(
        "--latency",
        type=_seconds,
        nargs=2,
        metavar=("MIN", "MAX"),
        default=[0.0, 0.0],
        help="answer delay in seconds, uniform in [MIN, MAX] (default 0 0)",
    )
    parser.add_argument("--fail-rate", type=_share, default=0.0, help="share answered 503 at once")
    parser.add_argument(
        "--timeout-rate", type=_share, default=0.0, help="share that hang, then 503, unapplied"
    )
    parser.add_argument(
        "--lost-response-rate",
        type=_share,
        default=0.0,
        help="share applied, then hanging and answered 503",
    )
    parser.add_argument(
        "--hang", type=_seconds, default=30.0, help="seconds a request hangs (default 30)"
    )
    parser.add_argument(
        "--pending-rate", type=_share, default=0.0, help="share answered 202, settled later"
    )
    parser.add_argument(
        "--settle-delay", type=_seconds, default=0.0, help="seconds until a pending one settles"
    )
    parser.add_argument(
        "--settle-fail-rate", type=_share, default=0.0, help="share of pending that fail"
    )
    parser.add_argument(
        "--decline-rate",
        type=_share,
        default=0.0,
        help="share of payments declined and fulfilments out of stock",
    )
    parser.add_argument(
        "--consent-code-seconds",
        type=_seconds,
        default=300.0,
        help="seconds a transfer-in's one-time code stays valid (default 300)",
    )
    parser.add_argument(
        "--transfer-bonus-mb",
        type=_megabytes,
        metavar="MB",
        default=0,
        help="MB a misbehaving carrier confirms beyond what a transfer-in asked (default 0)",
    )


def behaviour_from_args(args: argparse.Namespace) -> GatewayBehaviour:
    """GatewayBehaviour from options parsed with `add_arguments`."""
    low, high = args.latency
    return GatewayBehaviour(
        seed=args.seed,
        latency_seconds=(low, high),
        fail_rate=args.fail_rate,
        timeout_rate=args.timeout_rate,
        lost_response_rate=args.lost_response_rate,
        hang_seconds=args.hang,
        pending_rate=args.pending_rate,
        settle_delay_seconds=args.settle_delay,
        settle_fail_rate=args.settle_fail_rate,
        decline_rate=args.decline_rate,
        consent_code_seconds=args.consent_code_seconds,
        transfer_bonus_mb=args.transfer_bonus_mb,
    )
