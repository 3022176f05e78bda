"""The role sweep, generated from the route table: every route answers 403 `role-not-allowed`
to every role it is not for, before it reads a parameter or touches any data. A new route is
covered the day it is added; routes without a role check are listed with the reason."""

from __future__ import annotations

import re
from collections.abc import Iterator
from uuid import UUID, uuid4

import httpx
import psycopg
import pytest
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from api.app import create_app
from api.deps import admitted_roles
from api.routers import ROUTERS
from flowbill.settings import Settings
from tenants.schemas import Role
from tests.conftest import assert_problem, bearer, make_tenant

# Routes that answer any authenticated tenant, or no tenant at all, and why.
OPEN_TO_EVERY_TENANT = {
    "/v1/me",
    "/v1/me/keys",
    "/v1/me/keys/{key_id}",
    "/v1/me/sessions/end-all",
}
UNAUTHENTICATED = {
    "/healthz": "liveness, for orchestrators",
    "/readyz": "readiness, for orchestrators",
    "/metrics": "Prometheus",
    "/v1/gateway-callbacks": "outside parties, authenticated by their signature",
    "/v1/iot-callbacks/payments": "the payment gateway, authenticated by its signature",
    "/v1/iot-callbacks/identity-checks": "the identity-check provider, by its signature",
}
# Tables whose row counts must not move while the sweep runs (usage tables are left out:
# the session's ingest workers may store reports at any time).
WATCHED = (
    "tenants", "api_keys", "ledger_transactions", "ledger_entries", "wallet_lots", "campaigns",
    "carrier_orders", "exchange_orders", "vehicles", "vehicle_sims", "policies", "policy_terms",
    "allocations", "iot_cards", "iot_orders", "webhook_endpoints", "webhook_messages", "tariffs",
)  # fmt: skip


def _calls(dependant: Dependant) -> Iterator[object]:
    for dependency in dependant.dependencies:
        yield dependency.call
        yield from _calls(dependency)


def _admitted(route: APIRoute) -> tuple[Role, ...] | None:
    for call in _calls(route.dependant):
        roles = admitted_roles(call)
        if roles is not None:
            return roles
    return None


def _authenticates(route: APIRoute) -> bool:
    names = {getattr(call, "__name__", "") for call in _calls(route.dependant)}
    return bool(names & {"_caller", "_caller_without_transaction"})


def _path(route: APIRoute) -> str:
    kinds = {p.name: p.field_info.annotation for p in route.dependant.path_params}

    def value(match: re.Match[str]) -> str:
        kind = kinds.get(match[1])
        if kind is UUID:
            return str(uuid4())
        return "1" if kind is int else "8986000000000000000"

    return re.sub(r"\{([^}:]+)(?::[^}]*)?\}", value, route.path)


def _routes() -> list[APIRoute]:
    return [
        route
        for router in ROUTERS
        for route in router.routes
        if isinstance(route, APIRoute) and route.include_in_schema
    ]


def test_the_sweep_sees_every_route_of_the_openapi_document() -> None:
    assert {r.path for r in _routes()} == set(create_app().openapi()["paths"])


def test_every_route_is_role_checked_or_listed_with_its_reason() -> None:
    unchecked = {
        route.path
        for route in _routes()
        if _admitted(route) is None and route.path not in UNAUTHENTICATED
    }
    assert unchecked == OPEN_TO_EVERY_TENANT
    for route in _routes():
        if route.path in OPEN_TO_EVERY_TENANT:
            assert _authenticates(route), route.path


def _counts(settings: Settings) -> dict[str, int]:
    with psycopg.connect(settings.database_dsn) as conn:
        return {
            table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # type: ignore[index]
            for table in WATCHED
        }


@pytest.mark.parametrize("role", list(Role))
async def test_every_route_refuses_the_roles_it_is_not_for(
    http: httpx.AsyncClient, settings: Settings, role: Role
) -> None:
    _, key = await make_tenant(settings, role=role)
    before = _counts(settings)
    swept = 0
    for route in _routes():
        admitted = _admitted(route)
        if admitted is None or role in admitted:
            continue
        for method in sorted(route.methods - {"HEAD"}):
            body = b"{}" if method in {"POST", "PUT", "PATCH"} else None
            answer = await http.request(
                method, _path(route), content=body,
                headers={**bearer(key), "Content-Type": "application/json",
                         "Idempotency-Key": "role-sweep"},
            )  # fmt: skip
            assert answer.status_code == 403, f"{method} {route.path}: {answer.text}"
            assert_problem(answer, 403, "role-not-allowed")
            swept += 1
    assert swept > 20, "the sweep reached almost no route"
    assert _counts(settings) == before
