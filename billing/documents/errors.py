"""Errors of billing: periods, statements, invoices, credit notes, revenue share."""

from __future__ import annotations

from flowbill.errors import Conflict, InvalidInput, NotFound


class PeriodNotClosable(Conflict):
    type_ = "period-not-closable"
    title = "The period's closing window has not passed"


class MixedCurrencies(Conflict):
    type_ = "mixed-currencies"
    title = "The statement has lines in more than one currency"


class SponsorNotFound(NotFound):
    type_ = "sponsor-not-found"
    title = "Sponsor not found"


class DriverNotFound(NotFound):
    type_ = "driver-not-found"
    title = "Driver not found"


class LineNotFound(NotFound):
    type_ = "statement-line-not-found"
    title = "Statement line not found"


class InvoiceNotFound(NotFound):
    type_ = "invoice-not-found"
    title = "Invoice not found"


class CreditNoteNotFound(NotFound):
    type_ = "credit-note-not-found"
    title = "Credit note not found"


class InvalidCreditNote(InvalidInput):
    type_ = "invalid-credit-note"
    title = "Invalid credit note"


class CreditExceedsLine(Conflict):
    type_ = "credit-exceeds-line"
    title = "More than what is left to credit on the line"


class BillingKeyReused(Conflict):
    type_ = "idempotency-key-reused"
    title = "This Idempotency-Key was used for another request"


class PartnerNotFound(NotFound):
    type_ = "partner-not-found"
    title = "No such partner tenant"


class RuleNotFound(NotFound):
    type_ = "revenue-share-rule-not-found"
    title = "Revenue-share rule not found"


class RuleOverlaps(Conflict):
    type_ = "revenue-share-rule-overlaps"
    title = "The partner already has a rule for one of these apps in this time"


class RuleHistoryFixed(Conflict):
    type_ = "revenue-share-rule-history-fixed"
    title = "A rule's past cannot change"
