"""The simulated parties' books and how they answer a request: faults first, then once per
request id, at once or pending and settled later."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import random
import secrets
import time
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, Literal

from fastapi.responses import JSONResponse

from flowbill.settings import CallbackParty
from simulator.gateways.behaviour import GatewayBehaviour
from simulator.gateways.callbacks import CallbackSender
from simulator.gateways.schemas import (
    ConsentRequest,
    FulfilmentRequest,
    PaymentRequest,
    RefundRequest,
    TopUpRequest,
    TransferRequest,
    _Request,
)

# One logger name for the whole simulator, whichever of its modules speaks.
log = logging.getLogger(__package__)

# A subscriber's unused in-plan data, and how long data moved out of a plan stays valid.
PLAN_MB = (100, 2048)
VALIDITY_DAYS = (30, 365)

Kind = Literal["consent", "top_up", "transfer", "payment", "refund", "fulfilment"]
KINDS: tuple[Kind, ...] = ("consent", "top_up", "transfer", "payment", "refund", "fulfilment")
# A consent code: how many tries the subscriber gets.
CONSENT_TRIES = 5
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


@dataclasses.dataclass(slots=True)
class _Consent:
    """A one-time code texted to a line for one transfer; the code never leaves the line."""

    msisdn: str
    mb: int
    code: str
    expires_at: float
    tries: int = 0
    verified: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class _Sms:
    carrier: str
    code: str
    text: str
    sent_at: float


_Key = tuple[Kind, str, str]


class _Parties:
    """The simulated parties' state: in memory, changed only under the lock."""

    def __init__(
        self, behaviour: GatewayBehaviour, *, callback_secrets: Mapping[CallbackParty, str]
    ) -> None:
        self.behaviour = behaviour
        self._rng = random.Random(behaviour.seed)
        self._callbacks = CallbackSender(callback_secrets)
        self._lock = asyncio.Lock()
        self._operations: dict[_Key, _Operation] = {}
        self._applied: dict[Kind, list[dict[str, object]]] = {kind: [] for kind in KINDS}
        self._lines: dict[tuple[str, str], _Line] = {}
        self._captures: dict[str, _Capture] = {}
        self._consents: dict[tuple[str, str], _Consent] = {}
        self._inboxes: dict[str, list[_Sms]] = {}
        self._fulfilled_quantity = 0
        self._tasks: set[asyncio.Task[None]] = set()

    def change_behaviour(self, behaviour: GatewayBehaviour) -> None:
        self.behaviour = behaviour
        self._rng = random.Random(behaviour.seed)
        log.info("gateway behaviour changed", extra={"behaviour": dataclasses.asdict(behaviour)})

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._callbacks.close()

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
            await self._callbacks.deliver(
                operation.callback_url, {"kind": operation.kind, **document}
            )

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

    def send_consent_code(self, carrier: str, request: ConsentRequest) -> _Decision:
        code = f"{secrets.randbelow(10**6):06d}"
        now = time.time()
        self._consents[(carrier, request.request_id)] = _Consent(
            msisdn=request.msisdn,
            mb=request.mb,
            code=code,
            expires_at=now + self.behaviour.consent_code_seconds,
        )
        text = f"{code} is your code to move {request.mb} MB of your plan to Flowbill."
        self._inboxes.setdefault(request.msisdn, []).append(_Sms(carrier, code, text, now))
        self._applied["consent"].append({"carrier": carrier, "request_id": request.request_id})
        # Waiting for the subscriber: the code is on the phone, not in this answer.
        return _Decision(
            "pending", detail={"expires_in_seconds": self.behaviour.consent_code_seconds}
        )

    async def verify_consent(self, carrier: str, request_id: str, code: str) -> JSONResponse:
        """Whether `code` is the one texted for this transfer: five tries, then locked."""
        async with self._lock:
            consent = self._consents.get((carrier, request_id))
            if consent is None:
                reason, status_code = "consent_not_found", 404
            elif consent.verified:
                reason, status_code = None, 200
            elif consent.tries >= CONSENT_TRIES:
                reason, status_code = "too_many_attempts", 422
            elif time.time() >= consent.expires_at:
                reason, status_code = "code_expired", 422
            else:
                consent.tries += 1
                consent.verified = secrets.compare_digest(code, consent.code)
                reason, status_code = (None, 200) if consent.verified else ("wrong_code", 422)
        log.info(
            "consent code checked",
            extra={"carrier": carrier, "request_id": request_id, "reason": reason},
        )
        return JSONResponse(
            {"request_id": request_id, "carrier": carrier,
             "status": "failed" if reason else "confirmed", "reason": reason},
            status_code=status_code,
        )  # fmt: skip

    def consent_refusal(self, carrier: str, request: TransferRequest) -> _Decision | None:
        """Why a transfer may not be applied: no verified consent for this request and amount."""
        consent = self._consents.get((carrier, request.request_id))
        if consent is None or not consent.verified:
            return _Decision("failed", reason="consent_required", failure_http_status=403)
        if consent.mb != request.mb:
            return _Decision("failed", reason="consent_mismatch")
        return None

    def messages(self, msisdn: str) -> list[dict[str, object]]:
        """The texts a phone received, oldest first: only the phone sees its codes."""
        return [dataclasses.asdict(sms) for sms in self._inboxes.get(msisdn, [])]

    def transfer(self, carrier: str, request: TransferRequest) -> _Decision:
        msisdn = self._consents[(carrier, request.request_id)].msisdn
        line = self._line(carrier, msisdn)
        if request.mb > line.plan_remaining_mb:
            return _Decision("failed", reason="insufficient_plan_data")
        # A carrier may claim to have moved more than asked; the client must cap what it credits.
        moved = min(request.mb + self.behaviour.transfer_bonus_mb, line.plan_remaining_mb)
        line.transferred_out_mb += moved
        self._applied["transfer"].append(
            {"carrier": carrier, "request_id": request.request_id, "msisdn": msisdn, "mb": moved}
        )
        return _Decision(
            "confirmed",
            reference=self._reference(carrier),
            detail={"mb": moved, "validity_days": validity_days(carrier)},
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
