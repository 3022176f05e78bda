"""Errors of IoT cards: each has its own stable problem type."""

from __future__ import annotations

from flowbill.errors import Conflict, InvalidInput, NotFound


class IdNumberFormat(InvalidInput):
    type_ = "id-number-format"
    title = "The resident ID number is not 17 digits and a check digit"


class IdNumberRegion(InvalidInput):
    type_ = "id-number-region"
    title = "The resident ID number does not start with a region code"


class IdNumberBirthDate(InvalidInput):
    type_ = "id-number-birth-date"
    title = "The resident ID number holds no valid birth date"


class IdNumberFutureBirth(InvalidInput):
    type_ = "id-number-future-birth"
    title = "The resident ID number's birth date is in the future"


class IdNumberCheckDigit(InvalidInput):
    type_ = "id-number-check-digit"
    title = "The resident ID number's check digit is wrong"


class IdNumberUnderage(InvalidInput):
    type_ = "id-number-underage"
    title = "The card holder is younger than 16"


class InvalidName(InvalidInput):
    type_ = "invalid-name"
    title = "The name is not a name as written on an ID"


class InvalidPhone(InvalidInput):
    type_ = "invalid-phone"
    title = "The phone number is not a mainland mobile number"


class InvalidImei(InvalidInput):
    type_ = "invalid-imei"
    title = "The IMEI is not 15 digits with a valid check digit"


class InvalidTaxId(InvalidInput):
    type_ = "invalid-tax-id"
    title = "The tax id is not a valid unified social credit code"


class InvalidEffectiveTime(InvalidInput):
    type_ = "invalid-effective-time"
    title = "The effective time is before the card's last change"


class ImportRejected(InvalidInput):
    type_ = "card-import-rejected"
    title = "The card batch has bad rows; nothing was imported"


class IdLimitReached(Conflict):
    type_ = "id-card-limit-reached"
    title = "This ID number already holds the most cards one person may"


class CardNotFound(NotFound):
    type_ = "card-not-found"
    title = "Card not found"


class PlanNotFound(NotFound):
    type_ = "plan-not-found"
    title = "Plan not found"


class MerchantNotFound(NotFound):
    type_ = "merchant-not-found"
    title = "No such merchant store"


class OrderNotFound(NotFound):
    type_ = "iot-order-not-found"
    title = "Order not found"


class InvoiceNotFound(NotFound):
    type_ = "invoice-not-found"
    title = "Invoice not found"


class BuyerNotFound(NotFound):
    type_ = "buyer-not-found"
    title = "Buyer not found"


class ThresholdNotFound(NotFound):
    type_ = "threshold-not-found"
    title = "Usage threshold not found"


class OutOfStock(Conflict):
    type_ = "cards-out-of-stock"
    title = "The merchant has no card left in stock"


class PriceBelowWholesale(InvalidInput):
    type_ = "price-below-wholesale"
    title = "A retail price may not be below the wholesale price"


class ProfileRequired(Conflict):
    type_ = "seller-profile-required"
    title = "Set your seller name and tax id (for invoices) first"


class PlanNotOffered(Conflict):
    type_ = "plan-not-offered"
    title = "The merchant does not sell this plan"


class WrongPlanKind(InvalidInput):
    type_ = "wrong-plan-kind"
    title = "This kind of plan cannot be bought this way"


class TransitionNotAllowed(Conflict):
    type_ = "transition-not-allowed"
    title = "The card cannot make this change from its current state"


class NotVerified(Conflict):
    type_ = "not-verified"
    title = "The card holder's real name is not verified yet"


class VerificationPending(Conflict):
    type_ = "verification-pending"
    title = "A verification of this card is under way"


class IdempotencyKeyReused(Conflict):
    type_ = "idempotency-key-reused"
    title = "This Idempotency-Key was used for another request"


class NotRefundable(Conflict):
    type_ = "not-refundable"
    title = "This order cannot be refunded"


class CurrencyMismatch(InvalidInput):
    type_ = "currency-mismatch"
    title = "The plan is priced in another currency"


class OrderNotPaid(Conflict):
    type_ = "order-not-paid"
    title = "The card's purchase is not paid yet"


class CardNotActivated(Conflict):
    type_ = "card-not-activated"
    title = "The card has not been activated, so it has no IMEI bound"


class InvoicePending(Conflict):
    type_ = "invoice-pending"
    title = "The tax authority has not numbered this invoice yet"


class CardsNotFree(Conflict):
    type_ = "cards-not-free"
    title = "Some cards of the block are already assigned or sold"
