"""Errors of the wallet and its ledger."""

from __future__ import annotations

from flowbill.errors import Conflict, InvalidInput, NotFound, Unavailable


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


class UnknownUser(NotFound):
    type_ = "unknown-user"
    title = "No such user"


class PriceNotConfigured(NotFound):
    type_ = "price-not-configured"
    title = "The platform has no data price in this currency"


class CampaignNotFound(NotFound):
    type_ = "campaign-not-found"
    title = "Campaign not found"


class CampaignEnded(Conflict):
    type_ = "campaign-ended"
    title = "The campaign is not running"


class BudgetSpent(Conflict):
    type_ = "budget-spent"
    title = "The campaign's budget is spent"


class UserLimitReached(Conflict):
    type_ = "user-limit-reached"
    title = "The user has had every reward this campaign allows"


class EventIdReused(Conflict):
    type_ = "event-id-reused"
    title = "This event id was sent for another action"


class WrongAction(InvalidInput):
    type_ = "wrong-action"
    title = "The campaign rewards another action"


class NoCheckInFunding(Conflict):
    type_ = "no-check-in-funding"
    title = "No check-in campaign has budget left"


class PartnerNotLinked(NotFound):
    type_ = "partner-not-linked"
    title = "This partner platform does not act for you"


class CarrierNotFound(NotFound):
    type_ = "carrier-not-found"
    title = "No such carrier"


class PackageNotOffered(InvalidInput):
    type_ = "package-not-offered"
    title = "The carrier does not sell this package"


class TransferInUnavailable(Conflict):
    type_ = "transfer-in-unavailable"
    title = "This carrier does not move in-plan data into wallets"


class OrderNotFound(NotFound):
    type_ = "order-not-found"
    title = "Order not found"


class ItemNotFound(NotFound):
    type_ = "item-not-found"
    title = "No such catalogue item"


class OutOfStock(Conflict):
    type_ = "out-of-stock"
    title = "Not enough of this item is left"


class ItemLimitReached(Conflict):
    type_ = "item-limit-reached"
    title = "You have ordered as many of this item as one person may"


class CarrierRequired(InvalidInput):
    type_ = "carrier-required"
    title = "This item is priced per carrier: say which is yours"


class NotReturnable(Conflict):
    type_ = "not-returnable"
    title = "This order cannot be returned"


class ConsentCodeWrong(InvalidInput):
    type_ = "consent-code-wrong"
    title = "The one-time code is not the one sent to the phone line"


class ConsentExpired(Conflict):
    type_ = "consent-expired"
    title = "The one-time code has expired; start a new transfer-in"


class ConsentFailed(Conflict):
    type_ = "consent-failed"
    title = "This transfer-in can no longer be confirmed"


class CarrierUnavailable(Unavailable):
    type_ = "carrier-unavailable"
    title = "The carrier did not answer; try the same code again"
