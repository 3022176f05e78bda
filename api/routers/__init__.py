"""The one place that gathers every audience's router."""

from __future__ import annotations

from fastapi import APIRouter

from api.routers import (
    check_in,
    gateway_callbacks,
    health,
    me,
    merchant,
    operator,
    operator_wallet,
    partner,
    wallet,
)

ROUTERS: list[APIRouter] = [
    health.router,
    me.router,
    operator.router,
    operator_wallet.router,
    merchant.router,
    partner.router,
    check_in.router,
    wallet.router,
    gateway_callbacks.router,
]
