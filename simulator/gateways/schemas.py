"""The requests the simulated parties take, each idempotent on its request id."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")

    request_id: Annotated[str, Field(min_length=1, max_length=128)]


class TopUpRequest(_Request):
    msisdn: str
    package_mb: int
    callback_url: str | None = None


class ConsentRequest(_Request):
    msisdn: str
    mb: int


class ConsentVerification(BaseModel):
    code: Annotated[str, Field(min_length=1, max_length=16)]


class TransferRequest(_Request):
    """Moves data out of the line that consented under the same request id."""

    mb: int


class PaymentRequest(_Request):
    amount_minor: int
    currency: str
    callback_url: str | None = None


class RefundRequest(_Request):
    amount_minor: int


class FulfilmentRequest(_Request):
    item_kind: str
    sku: str
    quantity: int
    recipient_ref: str
    callback_url: str | None = None
