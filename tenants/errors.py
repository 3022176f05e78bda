"""Errors of tenancy and authentication."""

from __future__ import annotations

from flowbill.errors import Forbidden, NotFound, Unauthenticated


class InvalidApiKey(Unauthenticated):
    type_ = "invalid-api-key"
    title = "Invalid API key"


class MalformedApiKey(InvalidApiKey):
    """Not a Flowbill key at all, refused without the database (same problem type)."""


class RecentlyRefusedApiKey(InvalidApiKey):
    """A key the database refused moments ago, refused again without it (same problem type)."""


class RoleNotAllowed(Forbidden):
    type_ = "role-not-allowed"
    title = "This role may not call this endpoint"


class TenantNotFound(NotFound):
    type_ = "tenant-not-found"
    title = "Tenant not found"


class ApiKeyNotFound(NotFound):
    type_ = "api-key-not-found"
    title = "API key not found"
