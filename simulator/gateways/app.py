"""The simulated parties as one HTTP service: the app, its test-only `/_simulator` endpoints,
and `serve`."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from flowbill.settings import CallbackParty
from simulator.gateways.behaviour import GatewayBehaviour
from simulator.gateways.carriers import carrier_routes
from simulator.gateways.parties import _Parties
from simulator.gateways.providers import provider_routes

# One logger name for the whole simulator, whichever of its modules speaks.
log = logging.getLogger(__package__)


def simulator_app(title: str, close: Callable[[], Awaitable[None]]) -> FastAPI:
    """The frame every simulated party's app shares: `close` at shutdown, a health check,
    and malformed requests refused as a party would — a refusal that applied nothing, saying
    where without echoing the input back (it may hold personal data)."""

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await close()

    app = FastAPI(title=title, lifespan=lifespan)

    @app.exception_handler(RequestValidationError)
    async def _malformed(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": list(error["loc"]), "msg": error["msg"]} for error in exc.errors()]
        return JSONResponse(
            {"status": "failed", "reason": "malformed_request", "errors": errors},
            status_code=422,
        )

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """Whether the simulator is up."""
        return {"status": "ok"}

    return app


def create_gateway_app(
    behaviour: GatewayBehaviour, *, callback_secrets: Mapping[CallbackParty, str]
) -> FastAPI:
    """The simulated carriers, payment provider and fulfilment provider as one ASGI app; each
    party signs its callbacks with its own secret from `callback_secrets`."""
    parties = _Parties(behaviour, callback_secrets=callback_secrets)
    app = simulator_app("Flowbill gateway simulator", parties.close)
    app.include_router(carrier_routes(parties))
    app.include_router(provider_routes(parties))

    @app.get("/_simulator/behaviour")
    async def get_behaviour() -> dict[str, object]:
        """The behaviour in force."""
        return dataclasses.asdict(parties.behaviour)

    @app.put("/_simulator/behaviour")
    async def put_behaviour(behaviour: GatewayBehaviour) -> dict[str, object]:
        """Replace the behaviour; fields left out take their defaults, and the seed restarts
        the random draws."""
        parties.change_behaviour(behaviour)
        return dataclasses.asdict(behaviour)

    @app.get("/_simulator/phones/{msisdn}/messages")
    async def phone_messages(msisdn: str) -> dict[str, object]:
        """The texts a phone received (consent codes among them), oldest first: the only place
        a code can be read, as a real carrier's SMS reaches only the phone."""
        return {"msisdn": msisdn, "messages": parties.messages(msisdn)}

    @app.get("/_simulator/ledger")
    async def ledger() -> dict[str, object]:
        """What the parties actually applied, once per request however often it was sent."""
        return await parties.ledger()

    return app


def serve(
    *,
    host: str,
    port: int,
    behaviour: GatewayBehaviour,
    callback_secrets: Mapping[CallbackParty, str],
) -> None:
    """Run the simulator until interrupted."""
    log.info("gateway simulator starting", extra={"host": host, "port": port})
    uvicorn.run(
        create_gateway_app(behaviour, callback_secrets=callback_secrets),
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        # Hanging requests would otherwise hold a shutdown for hang_seconds.
        timeout_graceful_shutdown=5,
    )
