"""The one place that gathers every audience's router."""

from __future__ import annotations

from fastapi import APIRouter

from api.routers import health, me, operator

ROUTERS: list[APIRouter] = [health.router, me.router, operator.router]
