"""Metering models at the API's edge."""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from ingest.protocol import is_valid_iccid
from ingest.repository import RejectRecord


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


class RejectPublic(BaseModel):
    reject_id: int
    received_at: datetime
    topic: str
    reason: str
    detail: str
    payload_size: int
    payload_base64: str = Field(description="The raw payload (first 64 KiB), base64.")

    @classmethod
    def from_record(cls, record: RejectRecord) -> RejectPublic:
        return cls(
            reject_id=record.reject_id,
            received_at=record.received_at,
            topic=record.topic,
            reason=record.reason,
            detail=record.detail,
            payload_size=record.payload_size,
            payload_base64=base64.b64encode(record.payload).decode(),
        )


class RejectPage(BaseModel):
    rejects: list[RejectPublic]
    next_before_id: int | None = Field(description="Pass as before_id for the next page.")


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
