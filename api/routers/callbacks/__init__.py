"""Signed callbacks from outside parties: carrier, payment, fulfilment, identity check."""
