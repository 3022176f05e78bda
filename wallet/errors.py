"""Errors of the wallet and its ledger."""

from __future__ import annotations

from flowbill.errors import Conflict, InvalidInput, NotFound


class InsufficientBalance(Conflict):
    type_ = "insufficient-balance"
    title = "Not enough data in the wallet"


class IdempotencyKeyReused(Conflict):
    type_ = "idempotency-key-reused"
    title = "This Idempotency-Key was used for another request"


class InvalidAmount(InvalidInput):
    type_ = "invalid-amount"
    title = "Invalid amount"


class TransactionNotFound(NotFound):
    type_ = "transaction-not-found"
    title = "Transaction not found"


class RefundTooLarge(Conflict):
    type_ = "refund-too-large"
    title = "More than what is left to refund"
