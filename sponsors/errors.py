"""Errors of sponsors, vehicles and policies."""

from __future__ import annotations

from flowbill.errors import Conflict, Forbidden, InvalidInput, NotFound


class PolicyNotFound(NotFound):
    type_ = "policy-not-found"
    title = "Policy not found"


class VehicleNotFound(NotFound):
    type_ = "vehicle-not-found"
    title = "Vehicle not found"


class AppNotFound(NotFound):
    type_ = "app-not-found"
    title = "App not in the catalogue"


class UnknownApps(InvalidInput):
    type_ = "unknown-apps"
    title = "Apps the catalogue does not know"


class InvalidIccid(InvalidInput):
    type_ = "invalid-iccid"
    title = "Invalid ICCID"


class InvalidDriver(InvalidInput):
    type_ = "invalid-driver"
    title = "Not a driver"


class SimFittedElsewhere(Conflict):
    type_ = "sim-fitted-elsewhere"
    title = "The SIM is fitted to another vehicle"


class VehicleOfAnotherAutomaker(Conflict):
    type_ = "vehicle-of-another-automaker"
    title = "The VIN belongs to another automaker"


class ScopeNotAllowed(Forbidden):
    type_ = "scope-not-allowed"
    title = "You may not sponsor these vehicles"


class SimsOutsideScope(InvalidInput):
    type_ = "sims-outside-scope"
    title = "SIMs that are not the automaker's"


class EffectiveInThePast(InvalidInput):
    type_ = "effective-in-the-past"
    title = "Terms cannot take effect in the past"


class IdempotencyKeyReused(Conflict):
    type_ = "idempotency-key-reused"
    title = "This Idempotency-Key was used for another request"


class NotAnAutomaker(InvalidInput):
    type_ = "not-a-sponsor"
    title = "Not a sponsor"


class SimNotOwned(InvalidInput):
    type_ = "sim-not-owned"
    title = "SIMs that are not yours"


class InvalidSimOwner(InvalidInput):
    type_ = "invalid-sim-owner"
    title = "Not a tenant that may own SIMs"


class SimOwnedByAnother(Conflict):
    type_ = "sim-owned-by-another"
    title = "The SIM has another owner"


class SimNotFound(NotFound):
    type_ = "sim-not-found"
    title = "SIM not provisioned"


class InvitationNotFound(NotFound):
    type_ = "invitation-not-found"
    title = "No such invitation"


class PriceBelowFloor(InvalidInput):
    type_ = "price-below-floor"
    title = "The unit price is below the operator's floor"


class NoPriceFloor(InvalidInput):
    type_ = "no-price-floor"
    title = "The rate card has no floor for this currency"


class PriceFloorNotFound(NotFound):
    type_ = "price-floor-not-found"
    title = "No such price floor"


class PriceFloorClash(Conflict):
    type_ = "price-floor-clash"
    title = "A floor of this line already starts at that moment"
