"""`flowbill gateway-simulator`'s options make the behaviour the tests set over HTTP."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from simulator.gateways.arguments import add_arguments, behaviour_from_args
from simulator.gateways.behaviour import GatewayBehaviour


def parse(*argv: str) -> GatewayBehaviour:
    parser = argparse.ArgumentParser(exit_on_error=False)
    add_arguments(parser)
    return behaviour_from_args(parser.parse_args(list(argv)))


def test_no_options_is_the_default_behaviour() -> None:
    assert parse() == GatewayBehaviour()


def test_every_behaviour_has_its_option() -> None:
    found = parse(
        "--seed", "7", "--latency", "0.1", "0.5", "--fail-rate", "0.1", "--timeout-rate", "0.2",
        "--lost-response-rate", "0.05", "--hang", "12", "--pending-rate", "0.3",
        "--settle-delay", "2", "--settle-fail-rate", "0.1", "--decline-rate", "0.4",
        "--consent-code-seconds", "60", "--transfer-bonus-mb", "5",
    )  # fmt: skip
    assert found == GatewayBehaviour(
        seed=7, latency_seconds=(0.1, 0.5), fail_rate=0.1, timeout_rate=0.2,
        lost_response_rate=0.05, hang_seconds=12, pending_rate=0.3, settle_delay_seconds=2,
        settle_fail_rate=0.1, decline_rate=0.4, consent_code_seconds=60, transfer_bonus_mb=5,
    )  # fmt: skip
    # Each field was set away from its default: a new behaviour without an option fails here.
    default = GatewayBehaviour()
    assert [
        f.name
        for f in dataclasses.fields(found)
        if getattr(found, f.name) == getattr(default, f.name)
    ] == []


@pytest.mark.parametrize(
    "argv",
    [
        ("--fail-rate", "1.5"),
        ("--consent-code-seconds", "-1"),
        ("--consent-code-seconds", "7200"),
        ("--transfer-bonus-mb", "100001"),
        ("--transfer-bonus-mb", "lots"),
    ],
)
def test_out_of_range_options_are_refused(argv: tuple[str, str]) -> None:
    with pytest.raises(argparse.ArgumentError):
        parse(*argv)
