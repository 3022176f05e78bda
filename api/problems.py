"""One handler renders every error as RFC 9457 application/problem+json."""

from __future__ import annotations

import logging
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from flowbill.errors import FlowbillError, InvalidInput, StatementTimeout

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"


def _problem(body: dict[str, Any], headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=body["status"], media_type=PROBLEM_JSON, headers=headers)


def problem_response(exc: FlowbillError, *, instance: str) -> JSONResponse:
    """The problem+json answer for a Flowbill error (also for middleware, outside the
    handlers)."""
    return _problem(exc.problem(instance=instance), exc.response_headers() or None)


def _validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    # Echo where and why, never the rejected input itself (it may carry personal data).
    return [
        {"location": [str(p) for p in err.get("loc", ())], "message": err.get("msg", "")}
        for err in exc.errors()
    ]


def install(app: FastAPI) -> None:
    """Register the problem handlers on the app."""

    @app.exception_handler(FlowbillError)
    async def _flowbill_error(request: Request, exc: FlowbillError) -> JSONResponse:
        return problem_response(exc, instance=request.url.path)

    @app.exception_handler(psycopg.errors.QueryCanceled)
    async def _statement_timeout(
        request: Request, exc: psycopg.errors.QueryCanceled
    ) -> JSONResponse:
        # statement_timeout (FLOWBILL_API_STATEMENT_TIMEOUT_SECONDS): the statement was
        # cancelled and the request's transaction rolled back.
        route = getattr(request.scope.get("route"), "path", "unmatched")
        log.warning("statement cancelled", extra={"route": route})
        error = StatementTimeout("a database statement took too long and was cancelled; retry")
        return problem_response(error, instance=request.url.path)

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        error = InvalidInput("the request is not valid", errors=_validation_errors(exc))
        return _problem(error.problem(instance=request.url.path))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        title = {404: "Not found", 405: "Method not allowed"}.get(exc.status_code, "HTTP error")
        body = {
            "type": "about:blank",
            "title": title,
            "status": exc.status_code,
            "detail": str(exc.detail),
            "instance": request.url.path,
        }
        return _problem(body, dict(exc.headers) if exc.headers else None)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", extra={"path": request.url.path})
        body = {
            "type": "https://flowbill.dev/problems/internal",
            "title": "Internal error",
            "status": 500,
            "detail": "the request failed on our side; it was logged",
            "instance": request.url.path,
        }
        return _problem(body)
