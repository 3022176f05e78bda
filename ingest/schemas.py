"""Metering models at the API's edge."""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
)

from ingest.protocol import is_valid_iccid


def _check_iccid(value: str) -> str:
    if not is_valid_iccid(value):
        raise ValueError("must be 19-20 digits with a valid Luhn check digit")
    return value


Iccid = Annotated[str, AfterValidator(_check_iccid)]


class SimProvision(BaseModel):
    model_config = ConfigDict(extra="forbid")
    iccids: list[Iccid] = Field(min_length=1, max_length=10_000)
    label: Annotated[str, StringConstraints(strip_whitespace=True, max_length=200)] = ""


class SimProvisioned(BaseModel):
    requested: int
    newly_provisioned: int


class UnprovisionedSimPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    iccid: str
    reports: int
    first_seen: datetime
    last_seen: datetime


def _base64(raw: bytes | str) -> str:
    return raw if isinstance(raw, str) else base64.b64encode(raw).decode()


class RejectPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    reject_id: int
    received_at: datetime
    topic: str
    reason: str
    detail: str
    payload_size: int
    # Read from the row's raw `payload`, shown as base64 (JSON holds no raw bytes).
    payload_base64: Annotated[str, BeforeValidator(_base64)] = Field(
        validation_alias="payload", description="The raw payload (first 64 KiB), base64."
    )


class BootSequencePublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    iccid: str
    boot: int
    first_seq: int
    last_seq: int
    reports: int
    missing: int
    last_seen: datetime


class MissingRange(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    first_seq: int
    last_seq: int


class BootGaps(BaseModel):
    iccid: str
    boot: int
    missing: list[MissingRange]


class HourlyUsagePublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    hour: datetime
    app: str
    up_bytes: int
    down_bytes: int
    items: int
