"""`flowbill gateway-simulator`: the carriers, the payment provider and the fulfilment provider
we cannot reach from development or tests, as one HTTP service.

On a good day each party answers at once and does what it was asked. `GatewayBehaviour` makes
the day worse: slow answers, 503s before anything happened, requests that hang and are never
applied, and the nasty case, requests that are applied and whose answer is then lost. Every
request is idempotent on its request id, as with the real parties, so a client that resubmits
after a timeout never has a request applied twice; `GET /_simulator/ledger` shows what the
parties actually did, so tests can check exactly that.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import hashlib
import json
import logging
import random
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from typing import Annotated, Any, Literal

import httpx
import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.dataclasses import dataclass as pydantic_dataclass

from wallet.gateways import SIGNATURE_HEADER, sign_callback

log = logging.getLogger(__name__)

CARRIER_ID = re.compile(r"^[a-z0-9-]{2,40}$")
MSISDN = re.compile(r"^1[3-9]\d{9}$")
PACKAGES_MB = (10, 30, 50, 100, 200, 500, 1024)
# A subscriber's unused in-plan data, and how long data moved out of a plan stays valid.
PLAN_MB = (100, 2048)
VALIDITY_DAYS = (30, 365)
CURRENCIES = frozenset({"CNY"})
CALLBACK_ATTEMPTS = 5
CALLBACK_FIRST_BACKOFF_SECONDS = 0.2
CALLBACK_TIMEOUT_SECONDS = 5.0

Kind = Literal["top_up", "transfer", "payment", "refund", "fulfilment"]
KINDS: tuple[Kind, ...] = ("top_up", "transfer", "payment", "refund", "fulfilment")
Status = Literal["pending", "confirmed", "failed"]
Fault = Literal["unavailable", "timeout", "lost_response"]

# Why a pending request fails when it settles (settle_fail_rate).
_SETTLE_FAILURES: dict[Kind, str] = {
    "top_up": "carrier_rejected",
    "transfer": "carrier_rejected",
    "payment": "declined",
    "refund": "refund_rejected",
    "fulfilment": "out_of_stock",
}

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

    @model_validator(mode="after")
    def _latency_is_a_range(self) -> GatewayBehaviour:
        low, high = self.latency_seconds
        if low > high:
            raise ValueError("latency_seconds: the minimum is above the maximum")
        return self


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")

    request_id: Annotated[str, Field(min_length=1, max_length=128)]


class TopUpRequest(_Request):
    msisdn: str
    package_mb: int
    callback_url: str | None = None


class TransferRequest(_Request):
    msisdn: str
    mb: int


class PaymentRequest(_Request):
    amount_minor: int
    currency: str
    callback_url: str | None = None


class RefundRequest(_Request):
    amount_minor: int


class FulfilmentRequest(_Request):
    item_kind: str
    sku: str
    quantity: int
    recipient_ref: str
    callback_url: str | None = None


@dataclasses.dataclass(slots=True)
class _Decision:
    """What a party decided about a request, and how it answers it."""

    status: Status
    reason: str | None = None
    reference: str | None = None
    detail: dict[str, object] = dataclasses.field(default_factory=dict)
    failure_http_status: int = 422


@dataclasses.dataclass(slots=True)
class _Operation:
    kind: Kind
    # The path parameters the request lives under, echoed in answers and callbacks.
    scope: dict[str, str]
    request_id: str
    fingerprint: str
    reference_key: str
    callback_url: str | None
    apply: Callable[[], _Decision]
    decision: _Decision
    log_extra: dict[str, object]

    def document(self) -> dict[str, object]:
        return {
            "request_id": self.request_id,
            **self.scope,
            "status": self.decision.status,
            "reason": self.decision.reason,
            self.reference_key: self.decision.reference,
            **self.decision.detail,
        }

    def answer(self) -> JSONResponse:
        status_code = {"confirmed": 200, "pending": 202}.get(
            self.decision.status, self.decision.failure_http_status
        )
        return JSONResponse(self.document(), status_code=status_code)


@dataclasses.dataclass(slots=True)
class _Line:
    plan_mb: int
    topped_up_mb: int = 0
    transferred_out_mb: int = 0

    @property
    def plan_remaining_mb(self) -> int:
        return self.plan_mb - self.transferred_out_mb


@dataclasses.dataclass(slots=True)
class _Capture:
    amount_minor: int
    refunded_minor: int = 0


_Key = tuple[Kind, str, str]


class _Parties:
    """The simulated parties' state: in memory, changed only under the lock."""

    def __init__(self, behaviour: GatewayBehaviour, *, callback_secret: str) -> None:
        self.behaviour = behaviour
        self._rng = random.Random(behaviour.seed)
        self._secret = callback_secret
        self._lock = asyncio.Lock()
        self._operations: dict[_Key, _Operation] = {}
        self._applied: dict[Kind, list[dict[str, object]]] = {kind: [] for kind in KINDS}
        self._lines: dict[tuple[str, str], _Line] = {}
        self._captures: dict[str, _Capture] = {}
        self._fulfilled_quantity = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._client: httpx.AsyncClient | None = None

    def change_behaviour(self, behaviour: GatewayBehaviour) -> None:
        self.behaviour = behaviour
        self._rng = random.Random(behaviour.seed)
        log.info("gateway behaviour changed", extra={"behaviour": dataclasses.asdict(behaviour)})

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()

    # --- answering requests -------------------------------------------------------------

    async def submit(
        self,
        *,
        kind: Kind,
        scope: dict[str, str],
        request: _Request,
        reference_key: str,
        callback_url: str | None,
        refusal: _Decision | None,
        apply: Callable[[], _Decision],
        may_pend: bool,
        log_extra: dict[str, object] | None = None,
    ) -> JSONResponse:
        behaviour = self.behaviour
        fault = await self._before(behaviour)
        extra: dict[str, object] = {
            "kind": kind,
            **scope,
            "request_id": request.request_id,
            **(log_extra or {}),
        }
        if fault in ("unavailable", "timeout"):
            log.info("request refused by fault", extra={**extra, "fault": fault})
            return await self._unavailable(behaviour, hang=fault == "timeout")
        # The callback address is where to tell, not what to do: a retry from another of our
        # instances may give another one.
        fingerprint = json.dumps(request.model_dump(exclude={"callback_url"}), sort_keys=True)
        key: _Key = (kind, "/".join(scope.values()), request.request_id)
        async with self._lock:
            operation = self._operations.get(key)
            if operation is None:
                operation = _Operation(
                    kind=kind,
                    scope=scope,
                    request_id=request.request_id,
                    fingerprint=fingerprint,
                    reference_key=reference_key,
                    callback_url=callback_url,
                    apply=apply,
                    decision=_Decision("pending"),
                    log_extra=extra,
                )
                self._operations[key] = operation
                if refusal is not None:
                    operation.decision = refusal
                elif may_pend and self._rng.random() < behaviour.pending_rate:
                    self._spawn(
                        self._settle(operation, delay=behaviour.settle_delay_seconds),
                        name=f"settle-{kind}-{request.request_id}",
                    )
                else:
                    operation.decision = apply()
                answer = operation.answer()
                repeat = False
            elif operation.fingerprint != fingerprint:
                answer = JSONResponse(
                    {
                        "request_id": request.request_id,
                        "status": "failed",
                        "reason": "request_id_conflict",
                    },
                    status_code=409,
                )
                repeat = True
            else:
                answer = operation.answer()
                repeat = True
        log.info(
            "request answered",
            extra={
                **extra,
                "status": operation.decision.status,
                "reason": operation.decision.reason,
                "repeat": repeat,
                "http_status": answer.status_code,
                "fault": fault,
            },
        )
        if fault == "lost_response":
            return await self._unavailable(behaviour, hang=True)
        return answer

    async def status(self, *, kind: Kind, scope: dict[str, str], request_id: str) -> JSONResponse:
        behaviour = self.behaviour
        fault = await self._before(behaviour)
        if fault is not None:
            return await self._unavailable(behaviour, hang=fault != "unavailable")
        async with self._lock:
            operation = self._operations.get((kind, "/".join(scope.values()), request_id))
            document = None if operation is None else operation.document()
        if document is None:
            return JSONResponse(
                {"request_id": request_id, "detail": "no request with this id was received"},
                status_code=404,
            )
        return JSONResponse(document)

    async def _before(self, behaviour: GatewayBehaviour) -> Fault | None:
        low, high = behaviour.latency_seconds
        if high > 0:
            await asyncio.sleep(self._rng.uniform(low, high))
        if self._rng.random() < behaviour.fail_rate:
            return "unavailable"
        if self._rng.random() < behaviour.timeout_rate:
            return "timeout"
        if self._rng.random() < behaviour.lost_response_rate:
            return "lost_response"
        return None

    @staticmethod
    async def _unavailable(behaviour: GatewayBehaviour, *, hang: bool) -> JSONResponse:
        if hang:
            await asyncio.sleep(behaviour.hang_seconds)
        return JSONResponse({"detail": "temporarily unavailable"}, status_code=503)

    async def _settle(self, operation: _Operation, *, delay: float) -> None:
        await asyncio.sleep(delay)
        async with self._lock:
            if self._rng.random() < self.behaviour.settle_fail_rate:
                operation.decision = _Decision("failed", reason=_SETTLE_FAILURES[operation.kind])
            else:
                operation.decision = operation.apply()
            document = operation.document()
        log.info(
            "pending request settled",
            extra={
                **operation.log_extra,
                "status": operation.decision.status,
                "reason": operation.decision.reason,
            },
        )
        if operation.callback_url is not None:
            await self._deliver(operation.callback_url, {"kind": operation.kind, **document})

    async def _deliver(self, url: str, payload: Mapping[str, object]) -> None:
        """POST a signed callback, retrying with backoff; a receiver's failure is only logged."""
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=CALLBACK_TIMEOUT_SECONDS)
        body = json.dumps(payload, separators=(",", ":")).encode()
        extra = {"kind": payload["kind"], "request_id": payload["request_id"]}
        for attempt in range(1, CALLBACK_ATTEMPTS + 1):
            headers = {
                "content-type": "application/json",
                # Signed afresh for each attempt: the receiver rejects stale timestamps.
                SIGNATURE_HEADER: sign_callback(self._secret, body, now=time.time()),
            }
            try:
                response = await self._client.post(url, content=body, headers=headers)
            except (httpx.HTTPError, httpx.InvalidURL) as exc:
                error = type(exc).__name__
            else:
                if response.is_success:
                    log.info("callback delivered", extra={**extra, "attempt": attempt})
                    return
                error = f"http_{response.status_code}"
            log.warning(
                "callback delivery failed", extra={**extra, "attempt": attempt, "error": error}
            )
            if attempt < CALLBACK_ATTEMPTS:
                await asyncio.sleep(CALLBACK_FIRST_BACKOFF_SECONDS * 2 ** (attempt - 1))
        log.error("callback given up", extra=extra)

    def _spawn(self, coroutine: Coroutine[Any, Any, None], *, name: str) -> None:
        task = asyncio.create_task(self._guarded(coroutine), name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _guarded(coroutine: Coroutine[Any, Any, None]) -> None:
        try:
            await coroutine
        except Exception:
            log.exception("background work failed")

    # --- what the parties do (called under the lock) -----------------------------------

    def top_up(self, carrier: str, request: TopUpRequest) -> _Decision:
        self._line(carrier, request.msisdn).topped_up_mb += request.package_mb
        self._applied["top_up"].append(
            {
                "carrier": carrier,
                "request_id": request.request_id,
                "msisdn": request.msisdn,
                "mb": request.package_mb,
            }
        )
        return _Decision("confirmed", reference=self._reference(carrier))

    def transfer(self, carrier: str, request: TransferRequest) -> _Decision:
        line = self._line(carrier, request.msisdn)
        if request.mb > line.plan_remaining_mb:
            return _Decision("failed", reason="insufficient_plan_data")
        line.transferred_out_mb += request.mb
        self._applied["transfer"].append(
            {
                "carrier": carrier,
                "request_id": request.request_id,
                "msisdn": request.msisdn,
                "mb": request.mb,
            }
        )
        return _Decision(
            "confirmed",
            reference=self._reference(carrier),
            detail={"mb": request.mb, "validity_days": validity_days(carrier)},
        )

    def charge(self, request: PaymentRequest) -> _Decision:
        if self._rng.random() < self.behaviour.decline_rate:
            return _Decision("failed", reason="declined", failure_http_status=402)
        self._captures[request.request_id] = _Capture(request.amount_minor)
        self._applied["payment"].append(
            {"request_id": request.request_id, "amount_minor": request.amount_minor}
        )
        return _Decision(
            "confirmed",
            reference=self._reference("pay"),
            detail={"amount_minor": request.amount_minor, "currency": request.currency},
        )

    def refund(self, payment_id: str, request: RefundRequest) -> _Decision:
        payment = self._operations.get(("payment", "", payment_id))
        capture = self._captures.get(payment_id)
        if payment is None:
            return _Decision("failed", reason="payment_not_found", failure_http_status=404)
        if capture is None:
            return _Decision("failed", reason="payment_not_captured")
        refundable = capture.amount_minor - capture.refunded_minor
        if request.amount_minor > refundable:
            return _Decision(
                "failed", reason="exceeds_captured", detail={"refundable_minor": refundable}
            )
        capture.refunded_minor += request.amount_minor
        self._applied["refund"].append(
            {
                "payment_id": payment_id,
                "request_id": request.request_id,
                "amount_minor": request.amount_minor,
            }
        )
        return _Decision(
            "confirmed",
            reference=self._reference("rfd"),
            detail={
                "amount_minor": request.amount_minor,
                "refundable_minor": capture.amount_minor - capture.refunded_minor,
            },
        )

    def fulfil(self, request: FulfilmentRequest) -> _Decision:
        if self._rng.random() < self.behaviour.decline_rate:
            return _Decision("failed", reason="out_of_stock")
        self._fulfilled_quantity += request.quantity
        self._applied["fulfilment"].append(
            {
                "request_id": request.request_id,
                "item_kind": request.item_kind,
                "sku": request.sku,
                "quantity": request.quantity,
            }
        )
        voucher = "-".join(f"{self._rng.getrandbits(16):04X}" for _ in range(4))
        return _Decision(
            "confirmed",
            reference=self._reference("ful"),
            detail={"voucher": voucher, "sku": request.sku, "quantity": request.quantity},
        )

    def _line(self, carrier: str, msisdn: str) -> _Line:
        line = self._lines.get((carrier, msisdn))
        if line is None:
            line = self._lines[(carrier, msisdn)] = _Line(plan_mb=plan_mb(carrier, msisdn))
        return line

    def _reference(self, prefix: str) -> str:
        return f"{prefix.upper().replace('-', '')}-{self._rng.getrandbits(48):012X}"

    async def ledger(self) -> dict[str, object]:
        async with self._lock:
            lines: dict[str, dict[str, dict[str, int]]] = {}
            for (carrier, msisdn), line in sorted(self._lines.items()):
                lines.setdefault(carrier, {})[msisdn] = {
                    "plan_mb": line.plan_mb,
                    "topped_up_mb": line.topped_up_mb,
                    "transferred_out_mb": line.transferred_out_mb,
                    "plan_remaining_mb": line.plan_remaining_mb,
                }
            return {
                "applied": {kind: list(entries) for kind, entries in self._applied.items()},
                "lines": lines,
                "payments": {
                    payment_id: {
                        "captured_minor": capture.amount_minor,
                        "refunded_minor": capture.refunded_minor,
                    }
                    for payment_id, capture in self._captures.items()
                },
                "totals": {
                    "topped_up_mb": sum(line.topped_up_mb for line in self._lines.values()),
                    "transferred_out_mb": sum(
                        line.transferred_out_mb for line in self._lines.values()
                    ),
                    "captured_minor": sum(c.amount_minor for c in self._captures.values()),
                    "refunded_minor": sum(c.refunded_minor for c in self._captures.values()),
                    "fulfilled_quantity": self._fulfilled_quantity,
                },
            }


def plan_mb(carrier: str, msisdn: str) -> int:
    """The subscriber's unused in-plan data before any transfer: the same for every run."""
    low, high = PLAN_MB
    return low + _digest(f"{carrier}:{msisdn}") % (high - low + 1)


def validity_days(carrier: str) -> int:
    """How long the carrier keeps data moved out of a plan valid."""
    low, high = VALIDITY_DAYS
    return low + _digest(carrier) % (high - low + 1)


def _digest(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def mask_msisdn(msisdn: str) -> str:
    """A phone number as logs may show it: the first 3 and last 4 digits at most."""
    if len(msisdn) < 11:
        return "****"
    return f"{msisdn[:3]}****{msisdn[-4:]}"


def _number_refusal(msisdn: str) -> _Decision | None:
    return None if MSISDN.fullmatch(msisdn) else _Decision("failed", reason="invalid_number")


def _unknown_carrier(carrier: str) -> JSONResponse | None:
    if CARRIER_ID.fullmatch(carrier):
        return None
    return JSONResponse({"status": "failed", "reason": "unknown_carrier"}, status_code=404)


def simulator_app(title: str, close: Callable[[], Awaitable[None]]) -> FastAPI:
    """The frame every simulated party's app shares: `close` at shutdown, a health check,
    and malformed requests refused as a party would — a refusal that applied nothing, saying
    where without echoing the input back (it may hold personal data)."""

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await close()

    app = FastAPI(title=title, lifespan=lifespan)

    @app.exception_handler(RequestValidationError)
    async def _malformed(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": list(error["loc"]), "msg": error["msg"]} for error in exc.errors()]
        return JSONResponse(
            {"status": "failed", "reason": "malformed_request", "errors": errors},
            status_code=422,
        )

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """Whether the simulator is up."""
        return {"status": "ok"}

    return app


def create_gateway_app(behaviour: GatewayBehaviour, *, callback_secret: str) -> FastAPI:
    """The simulated carriers, payment provider and fulfilment provider as one ASGI app."""
    parties = _Parties(behaviour, callback_secret=callback_secret)
    app = simulator_app("Flowbill gateway simulator", parties.close)

    @app.post("/carriers/{carrier}/top-ups")
    async def submit_top_up(carrier: str, request: TopUpRequest) -> JSONResponse:
        """Put a standard data package on a phone number."""
        if (unknown := _unknown_carrier(carrier)) is not None:
            return unknown
        refusal = _number_refusal(request.msisdn)
        if refusal is None and request.package_mb not in PACKAGES_MB:
            refusal = _Decision("failed", reason="package_not_offered")
        return await parties.submit(
            kind="top_up",
            scope={"carrier": carrier},
            request=request,
            reference_key="carrier_ref",
            callback_url=request.callback_url,
            refusal=refusal,
            apply=lambda: parties.top_up(carrier, request),
            may_pend=True,
            log_extra={"msisdn": mask_msisdn(request.msisdn), "mb": request.package_mb},
        )

    @app.get("/carriers/{carrier}/top-ups/{request_id}")
    async def top_up_status(carrier: str, request_id: str) -> JSONResponse:
        """Where a top-up stands; 404 if the carrier never received it."""
        return await parties.status(
            kind="top_up", scope={"carrier": carrier}, request_id=request_id
        )

    @app.post("/carriers/{carrier}/transfers")
    async def submit_transfer(carrier: str, request: TransferRequest) -> JSONResponse:
        """Move a subscriber's unused in-plan data out to Flowbill."""
        if (unknown := _unknown_carrier(carrier)) is not None:
            return unknown
        refusal = _number_refusal(request.msisdn)
        if refusal is None and request.mb <= 0:
            refusal = _Decision("failed", reason="invalid_amount")
        return await parties.submit(
            kind="transfer",
            scope={"carrier": carrier},
            request=request,
            reference_key="carrier_ref",
            callback_url=None,
            refusal=refusal,
            apply=lambda: parties.transfer(carrier, request),
            may_pend=True,
            log_extra={"msisdn": mask_msisdn(request.msisdn), "mb": request.mb},
        )

    @app.get("/carriers/{carrier}/transfers/{request_id}")
    async def transfer_status(carrier: str, request_id: str) -> JSONResponse:
        """Where a transfer stands; 404 if the carrier never received it."""
        return await parties.status(
            kind="transfer", scope={"carrier": carrier}, request_id=request_id
        )

    @app.post("/payments")
    async def charge(request: PaymentRequest) -> JSONResponse:
        """Capture a payment; its request id is the payment id for refunds."""
        refusal = None
        if request.amount_minor <= 0:
            refusal = _Decision("failed", reason="invalid_amount")
        elif request.currency not in CURRENCIES:
            refusal = _Decision("failed", reason="unsupported_currency")
        return await parties.submit(
            kind="payment",
            scope={},
            request=request,
            reference_key="payment_ref",
            callback_url=request.callback_url,
            refusal=refusal,
            apply=lambda: parties.charge(request),
            may_pend=True,
            log_extra={"amount_minor": request.amount_minor},
        )

    @app.get("/payments/{request_id}")
    async def charge_status(request_id: str) -> JSONResponse:
        """Where a payment stands; 404 if the provider never received it."""
        return await parties.status(kind="payment", scope={}, request_id=request_id)

    @app.post("/payments/{payment_id}/refunds")
    async def refund(payment_id: str, request: RefundRequest) -> JSONResponse:
        """Refund part of a captured payment, never more than what is left of it."""
        refusal = None
        if request.amount_minor <= 0:
            refusal = _Decision("failed", reason="invalid_amount")
        return await parties.submit(
            kind="refund",
            scope={"payment_id": payment_id},
            request=request,
            reference_key="refund_ref",
            callback_url=None,
            refusal=refusal,
            apply=lambda: parties.refund(payment_id, request),
            # Refunds are answered at once: there is no callback for them.
            may_pend=False,
            log_extra={"amount_minor": request.amount_minor},
        )

    @app.get("/payments/{payment_id}/refunds/{request_id}")
    async def refund_status(payment_id: str, request_id: str) -> JSONResponse:
        """Where a refund stands; 404 if the provider never received it."""
        return await parties.status(
            kind="refund", scope={"payment_id": payment_id}, request_id=request_id
        )

    @app.post("/fulfilments")
    async def fulfil(request: FulfilmentRequest) -> JSONResponse:
        """Deliver exchange goods (red envelopes, phone credit, memberships)."""
        refusal = None
        if request.quantity <= 0:
            refusal = _Decision("failed", reason="invalid_quantity")
        return await parties.submit(
            kind="fulfilment",
            scope={},
            request=request,
            reference_key="fulfilment_ref",
            callback_url=request.callback_url,
            refusal=refusal,
            apply=lambda: parties.fulfil(request),
            may_pend=True,
            log_extra={"item_kind": request.item_kind, "quantity": request.quantity},
        )

    @app.get("/fulfilments/{request_id}")
    async def fulfilment_status(request_id: str) -> JSONResponse:
        """Where a delivery stands; 404 if the provider never received it."""
        return await parties.status(kind="fulfilment", scope={}, request_id=request_id)

    @app.get("/_simulator/behaviour")
    async def get_behaviour() -> dict[str, object]:
        """The behaviour in force."""
        return dataclasses.asdict(parties.behaviour)

    @app.put("/_simulator/behaviour")
    async def put_behaviour(behaviour: GatewayBehaviour) -> dict[str, object]:
        """Replace the behaviour; fields left out take their defaults, and the seed restarts
        the random draws."""
        parties.change_behaviour(behaviour)
        return dataclasses.asdict(behaviour)

    @app.get("/_simulator/ledger")
    async def ledger() -> dict[str, object]:
        """What the parties actually applied, once per request however often it was sent."""
        return await parties.ledger()

    return app


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
    )


def serve(*, host: str, port: int, behaviour: GatewayBehaviour, callback_secret: str) -> None:
    """Run the simulator until interrupted."""
    log.info("gateway simulator starting", extra={"host": host, "port": port})
    uvicorn.run(
        create_gateway_app(behaviour, callback_secret=callback_secret),
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        # Hanging requests would otherwise hold a shutdown for hang_seconds.
        timeout_graceful_shutdown=5,
    )
