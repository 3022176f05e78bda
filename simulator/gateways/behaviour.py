"""How the simulated parties behave: latency, faults, pending requests, refusals."""

from __future__ import annotations

from typing import Annotated

from pydantic import ConfigDict, Field, model_validator
from pydantic.dataclasses import dataclass as pydantic_dataclass

Share = Annotated[float, Field(ge=0.0, le=1.0)]
Seconds = Annotated[float, Field(ge=0.0, le=3600.0)]


@pydantic_dataclass(frozen=True, slots=True, config=ConfigDict(extra="forbid"))
class GatewayBehaviour:
    """How the simulated parties behave. The defaults confirm every request at once.

    Faults are drawn in order for each request: fail (503 at once), else time out (hang, then
    503; nothing applied), else lose the response (apply, hang, then 503).
    """

    seed: int = 0
    # Every answer is delayed by a uniform draw from [min, max].
    latency_seconds: tuple[Seconds, Seconds] = (0.0, 0.0)
    fail_rate: Share = 0.0
    timeout_rate: Share = 0.0
    lost_response_rate: Share = 0.0
    # How long a timed-out or lost request hangs: longer than the client waits.
    hang_seconds: Seconds = 30.0
    pending_rate: Share = 0.0
    settle_delay_seconds: Seconds = 0.0
    settle_fail_rate: Share = 0.0
    # Business refusals: a payment declined, a fulfilment out of stock.
    decline_rate: Share = 0.0
    # How long a transfer-in's one-time code stays valid, as a carrier's SMS code.
    consent_code_seconds: Seconds = 300.0
    # A carrier that confirms more than it was asked to move (the client must not believe it).
    transfer_bonus_mb: Annotated[int, Field(ge=0, le=100_000)] = 0

    @model_validator(mode="after")
    def _latency_is_a_range(self) -> GatewayBehaviour:
        low, high = self.latency_seconds
        if low > high:
            raise ValueError("latency_seconds: the minimum is above the maximum")
        return self
