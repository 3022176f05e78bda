"""Tenant and API key models at the API's edge."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Annotated
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, StringConstraints


class Role(enum.StrEnum):
    OPERATOR = "operator"
    SPONSOR = "sponsor"
    MERCHANT = "merchant"
    DRIVER = "driver"
    # A service vendor running promotions for many merchants: sends action events.
    PARTNER = "partner"
    # An app embedding the check-in tool.
    APP = "app"


Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Label = Annotated[str, StringConstraints(strip_whitespace=True, max_length=200)]


class TenantCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Name
    role: Role
    key_label: Label = Field(default="initial", description="Label of the first API key.")


class TenantPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    tenant_id: UUID
    name: str
    role: Role
    created_at: datetime
    disabled: bool


class ApiKeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    label: Label = ""


class ApiKeyPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    key_id: str
    label: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class ApiKeyIssued(ApiKeyPublic):
    api_key: str = Field(description="The secret key. Shown once; store it now.")


class TenantCreated(BaseModel):
    tenant: TenantPublic
    key: ApiKeyIssued
