"""Sponsors' endpoints: vehicles, policies, statements and invoices."""
