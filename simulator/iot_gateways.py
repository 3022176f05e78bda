"""The identity-check provider and the tax authority's invoicing service that IoT cards need,
simulated as one HTTP service (`python -m simulator.iot_gateways`).

Identity checks are asynchronous, as the real providers' are: a check is accepted (202) and
answered later by a signed callback (`Flowbill-Gateway-Signature`, as the other gateways'),
and its status can be asked. `IotBehaviour` makes the day worse: slow answers, 503s, requests
that hang, and rejected identities. The invoicing service numbers each invoice (20 digits),
checks that its amounts add up and that a red-letter invoice cancels an invoice it issued.
Every request is idempotent on its request id. Names and ID numbers are never logged.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import random
import time
from datetime import UTC, datetime
from typing import Annotated, Any

import httpx
import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from pydantic.dataclasses import dataclass as pydantic_dataclass

from flowbill.logs import configure_logging
from simulator.gateways.app import simulator_app
from wallet.gateways import SIGNATURE_HEADER, sign_callback

log = logging.getLogger(__name__)

CALLBACK_ATTEMPTS = 5
CALLBACK_FIRST_BACKOFF_SECONDS = 0.2
Share = Annotated[float, Field(ge=0.0, le=1.0)]
Seconds = Annotated[float, Field(ge=0.0, le=3600.0)]


@pydantic_dataclass(frozen=True, slots=True, config=ConfigDict(extra="forbid"))
class IotBehaviour:
    """How the simulated parties behave; the defaults verify everyone and issue every invoice.

    Faults are drawn per request: fail (503 at once, nothing applied), else time out (hang,
    then 503, nothing applied).
    """

    seed: int = 0
    latency_seconds: tuple[Seconds, Seconds] = (0.0, 0.0)
    fail_rate: Share = 0.0
    timeout_rate: Share = 0.0
    hang_seconds: Seconds = 30.0
    # How long an identity check takes before its callback.
    settle_delay_seconds: Seconds = 0.05
    # Share of identities the provider cannot match (name, ID number and phone).
    reject_rate: Share = 0.0
    # Checks are settled but their callbacks never sent (the status query still answers).
    drop_callbacks: bool = False


class IdentityCheckRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    request_id: Annotated[str, Field(min_length=1, max_length=128)]
    name: Annotated[str, Field(min_length=1, max_length=200)]
    id_number: Annotated[str, Field(pattern=r"^[0-9]{17}[0-9X]$")]
    phone: Annotated[str, Field(pattern=r"^1[3-9][0-9]{9}$")]
    callback_url: str | None = None


class Party(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: Annotated[str, Field(min_length=1, max_length=200)]
    tax_id: str | None = None


class InvoiceLine(BaseModel):
    model_config = ConfigDict(extra="ignore")
    item: str
    quantity: int
    amount_minor: int
    tax_minor: int


class InvoiceRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    request_id: Annotated[str, Field(min_length=1, max_length=128)]
    colour: str
    original_number: str | None = None
    seller: Party
    buyer: Party
    lines: Annotated[list[InvoiceLine], Field(min_length=1, max_length=100)]
    amount_minor: int
    tax_minor: int
    total_minor: int
    currency: str


@dataclasses.dataclass(slots=True)
class _Check:
    request_id: str
    fingerprint: str
    callback_url: str | None
    status: str = "pending"
    reason: str | None = None
    check_ref: str = ""

    def document(self) -> dict[str, object]:
        return {
            "request_id": self.request_id,
            "status": self.status,
            "reason": self.reason,
            "check_ref": self.check_ref,
        }


class _Parties:
    def __init__(self, behaviour: IotBehaviour, *, callback_secret: str) -> None:
        self.behaviour = behaviour
        self._rng = random.Random(behaviour.seed)
        self._secret = callback_secret
        self._lock = asyncio.Lock()
        self.checks: dict[str, _Check] = {}
        self.invoices: dict[str, dict[str, object]] = {}
        self._by_number: dict[str, dict[str, object]] = {}
        self._sequence = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._client: httpx.AsyncClient | None = None

    def change(self, behaviour: IotBehaviour) -> None:
        self.behaviour = behaviour
        self._rng = random.Random(behaviour.seed)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()

    async def fault(self) -> JSONResponse | None:
        behaviour = self.behaviour
        low, high = behaviour.latency_seconds
        if high > 0:
            await asyncio.sleep(self._rng.uniform(low, high))
        if self._rng.random() < behaviour.fail_rate:
            return JSONResponse({"detail": "temporarily unavailable"}, status_code=503)
        if self._rng.random() < behaviour.timeout_rate:
            await asyncio.sleep(behaviour.hang_seconds)
            return JSONResponse({"detail": "temporarily unavailable"}, status_code=503)
        return None

    async def submit_check(self, request: IdentityCheckRequest) -> JSONResponse:
        fingerprint = json.dumps(request.model_dump(exclude={"callback_url"}), sort_keys=True)
        async with self._lock:
            check = self.checks.get(request.request_id)
            if check is not None and check.fingerprint != fingerprint:
                return JSONResponse(
                    {
                        "request_id": request.request_id,
                        "status": "failed",
                        "reason": "request_id_conflict",
                    },
                    status_code=409,
                )
            if check is None:
                check = _Check(
                    request.request_id,
                    fingerprint,
                    request.callback_url,
                    check_ref=f"IDC-{self._rng.getrandbits(48):012X}",
                )
                self.checks[request.request_id] = check
                rejected = self._rng.random() < self.behaviour.reject_rate
                task = asyncio.create_task(self._settle(check, rejected=rejected))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        log.info("identity check accepted", extra={"request_id": request.request_id})
        status_code = 202 if check.status == "pending" else 200
        if check.status == "failed":
            status_code = 422
        return JSONResponse(check.document(), status_code=status_code)

    async def _settle(self, check: _Check, *, rejected: bool) -> None:
        await asyncio.sleep(self.behaviour.settle_delay_seconds)
        async with self._lock:
            check.status = "failed" if rejected else "confirmed"
            check.reason = "identity_mismatch" if rejected else None
        log.info(
            "identity check settled", extra={"request_id": check.request_id, "status": check.status}
        )
        if check.callback_url and not self.behaviour.drop_callbacks:
            await self._deliver(check.callback_url, {"kind": "identity_check", **check.document()})

    async def _deliver(self, url: str, payload: dict[str, object]) -> None:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=5.0)
        body = json.dumps(payload, separators=(",", ":")).encode()
        for attempt in range(1, CALLBACK_ATTEMPTS + 1):
            headers = {
                "content-type": "application/json",
                SIGNATURE_HEADER: sign_callback(self._secret, body, now=time.time()),
            }
            try:
                response = await self._client.post(url, content=body, headers=headers)
                if response.is_success:
                    return
                error = f"http_{response.status_code}"
            except httpx.HTTPError as exc:
                error = type(exc).__name__
            log.warning(
                "callback delivery failed",
                extra={"request_id": payload["request_id"], "attempt": attempt, "error": error},
            )
            await asyncio.sleep(CALLBACK_FIRST_BACKOFF_SECONDS * 2 ** (attempt - 1))
        log.error("callback given up", extra={"request_id": payload["request_id"]})

    async def issue(self, request: InvoiceRequest) -> JSONResponse:
        async with self._lock:
            existing = self.invoices.get(request.request_id)
            if existing is not None:
                return JSONResponse(existing)
            refusal = self._refusal(request)
            if refusal is not None:
                return JSONResponse(
                    {"request_id": request.request_id, "status": "failed", "reason": refusal},
                    status_code=422,
                )
            self._sequence += 1
            now = datetime.now(UTC)
            # 20 digits: year, region (31: Shanghai), channel, then a 15-digit sequence.
            number = f"{now:%y}310{self._sequence + self._rng.randrange(10**9) * 10**5:015d}"
            issued: dict[str, object] = {
                "request_id": request.request_id,
                "status": "confirmed",
                "invoice_number": number,
                "issued_on": now.date().isoformat(),
                "colour": request.colour,
                "total_minor": request.total_minor,
            }
            self.invoices[request.request_id] = issued
            self._by_number[number] = issued
        log.info(
            "invoice issued", extra={"request_id": request.request_id, "colour": request.colour}
        )
        return JSONResponse(issued)

    def _refusal(self, request: InvoiceRequest) -> str | None:
        if request.colour not in ("blue", "red"):
            return "unknown_colour"
        if not request.seller.tax_id:
            return "seller_tax_id_missing"
        if request.amount_minor + request.tax_minor != request.total_minor:
            return "amounts_do_not_add_up"
        if (
            sum(line.amount_minor for line in request.lines) != request.amount_minor
            or sum(line.tax_minor for line in request.lines) != request.tax_minor
        ):
            return "lines_do_not_add_up"
        if request.colour == "red":
            original = self._by_number.get(request.original_number or "")
            if original is None or original["colour"] != "blue":
                return "original_not_found"
            if original["total_minor"] != -request.total_minor:
                return "red_does_not_cancel_original"
        elif request.total_minor <= 0:
            return "blue_total_not_positive"
        return None


def create_iot_gateway_app(behaviour: IotBehaviour, *, callback_secret: str) -> FastAPI:
    """The simulated identity-check provider and invoicing service as one ASGI app; the
    identity-check provider signs its callbacks with `callback_secret` (its own)."""
    parties = _Parties(behaviour, callback_secret=callback_secret)

    app = simulator_app("Flowbill IoT gateway simulator", parties.close)

    @app.post("/identity-checks")
    async def submit_check(request: IdentityCheckRequest) -> JSONResponse:
        """Check that a name, resident ID number and phone belong to one person (async)."""
        return await parties.fault() or await parties.submit_check(request)

    @app.get("/identity-checks/{request_id}")
    async def check_status(request_id: str) -> JSONResponse:
        """Where a check stands; 404 if never received."""
        if (fault := await parties.fault()) is not None:
            return fault
        check = parties.checks.get(request_id)
        if check is None:
            return JSONResponse({"request_id": request_id}, status_code=404)
        return JSONResponse(check.document())

    @app.post("/invoices")
    async def issue(request: InvoiceRequest) -> JSONResponse:
        """Issue (number) an electronic invoice, blue or red-letter."""
        return await parties.fault() or await parties.issue(request)

    @app.get("/invoices/{request_id}")
    async def invoice_status(request_id: str) -> JSONResponse:
        if (fault := await parties.fault()) is not None:
            return fault
        issued = parties.invoices.get(request_id)
        if issued is None:
            return JSONResponse({"request_id": request_id}, status_code=404)
        return JSONResponse(issued)

    @app.get("/_simulator/behaviour")
    async def get_behaviour() -> dict[str, Any]:
        return dataclasses.asdict(parties.behaviour)

    @app.put("/_simulator/behaviour")
    async def put_behaviour(behaviour: IotBehaviour) -> dict[str, Any]:
        """Replace the behaviour (fields left out take their defaults)."""
        parties.change(behaviour)
        return dataclasses.asdict(behaviour)

    @app.get("/_simulator/ledger")
    async def ledger() -> dict[str, object]:
        """What the parties did: checks by outcome, invoices issued."""
        return {
            "checks": {rid: c.status for rid, c in parties.checks.items()},
            "invoices": dict(parties.invoices),
        }

    return app


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The simulated parties' behaviour as command-line options."""
    parser.add_argument("--seed", type=int, default=0, help="seed of the random draws")
    parser.add_argument("--fail-rate", type=float, default=0.0, help="share answered 503")
    parser.add_argument("--timeout-rate", type=float, default=0.0, help="share that hang, then 503")
    parser.add_argument(
        "--reject-rate", type=float, default=0.0, help="share of identities rejected"
    )
    parser.add_argument(
        "--settle-delay", type=float, default=0.05, help="seconds until a check's callback"
    )


def behaviour_from_args(args: argparse.Namespace) -> IotBehaviour:
    """IotBehaviour from options parsed with `add_arguments`."""
    return IotBehaviour(
        seed=args.seed,
        fail_rate=args.fail_rate,
        timeout_rate=args.timeout_rate,
        reject_rate=args.reject_rate,
        settle_delay_seconds=args.settle_delay,
    )


def serve(*, host: str, port: int, behaviour: IotBehaviour, callback_secret: str) -> None:
    """Run the simulator until interrupted."""
    log.info("iot gateway simulator starting", extra={"host": host, "port": port})
    uvicorn.run(
        create_iot_gateway_app(behaviour, callback_secret=callback_secret),
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=5,
    )


def main(argv: list[str] | None = None) -> None:
    """`python -m simulator.iot_gateways`: the identity-check provider signs with its secret
    from the settings (FLOWBILL_IDENTITY_CALLBACK_SECRET), which the API verifies with."""
    from flowbill.settings import get_settings

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8091)
    add_arguments(parser)
    args = parser.parse_args(argv)
    configure_logging()
    serve(
        host=args.host,
        port=args.port,
        behaviour=behaviour_from_args(args),
        callback_secret=get_settings().callback_secret("identity"),
    )


if __name__ == "__main__":
    main()
