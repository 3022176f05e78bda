"""Request limits applied before any work: the body size (ASGI middleware, before parsing)
and a token bucket per API key by its role (checked before a database connection is taken,
in api/deps.py)."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Collection
from dataclasses import dataclass

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.problems import problem_response
from flowbill import metrics
from flowbill.errors import FlowbillError
from flowbill.settings import Settings

# A refused body is read on (and dropped, never parsed) for at most this much more, so that
# an ordinary client gets its 413; past it, the connection is closed.
DRAIN_BYTES = 4 * 1024 * 1024
DRAIN_SECONDS = 5.0

# Routes that take a whole file, read as a stream up to FLOWBILL_REQUEST_IMPORT_BODY_MAX_BYTES.
IMPORT_PATHS = frozenset({"/v1/operator/iot/card-imports"})


class BodyTooLarge(FlowbillError):
    status = 413
    type_ = "body-too-large"
    title = "Request body too large"


class RateLimited(FlowbillError):
    status = 429
    type_ = "rate-limited"
    title = "Too many requests"

    def __init__(self, detail: str, *, retry_after_seconds: int) -> None:
        super().__init__(detail, retry_after_seconds=retry_after_seconds)
        self.retry_after_seconds = retry_after_seconds

    def response_headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_seconds)}


class _Exceeded(Exception):
    """Raised into the app by the limited receive; the middleware answers 413 itself."""


class BodyLimit:
    """Refuses a request body over its route's limit with 413 problem+json: at once when its
    Content-Length says so (the app never runs), else when the running count of a chunked
    body passes the limit (the app's answer, whatever it is, is replaced by the 413; the
    request's transaction, if any, was rolled back by the error raised into it)."""

    def __init__(self, app: ASGIApp, *, import_paths: Collection[str] = IMPORT_PATHS) -> None:
        self.app = app
        self.import_paths = frozenset(import_paths)

    def limit_for(self, settings: Settings, path: str) -> int:
        if path in self.import_paths:
            return settings.request_import_body_max_bytes
        return settings.request_body_max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # The settings the app's lifespan built (Starlette puts the app in the scope).
        limit = self.limit_for(scope["app"].state.settings, scope["path"])
        headers = Headers(scope=scope)
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            # A client that waits for "100 Continue" never sends the body; another is sending
            # it: what is small enough is read and dropped first, so that it reads our answer
            # (closing on unread data resets the connection, answer and all).
            if headers.get("expect", "").lower() != "100-continue" and int(declared) <= (
                limit + DRAIN_BYTES
            ):
                await _drain(receive, DRAIN_BYTES + limit)
            await self._refuse(scope, receive, send, limit)
            return

        received = 0
        exceeded = False
        started = False

        async def limited_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    exceeded = True
                    raise _Exceeded
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exceeded and not started:
                return  # the app's answer to a failed read; ours follows
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not exceeded:
                raise
        if exceeded and not started:
            await _drain(receive, DRAIN_BYTES)
            await self._refuse(scope, receive, send, limit)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        metrics.HTTP_REQUESTS_REFUSED.labels("body_too_large", "").inc()
        error = BodyTooLarge(
            f"the request body is larger than this route takes ({limit} bytes)", max_bytes=limit
        )
        response = problem_response(error, instance=scope["path"])
        # Tell the client not to go on sending: the connection is not reused.
        response.headers["Connection"] = "close"
        await response(scope, receive, send)


async def _drain(receive: Receive, budget: int) -> None:
    """Read and drop the rest of a refused body, up to `budget` bytes and DRAIN_SECONDS."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(DRAIN_SECONDS):
            while budget > 0:
                message = await receive()
                if message["type"] != "http.request":
                    return
                budget -= len(message.get("body", b""))
                if not message.get("more_body", False):
                    return


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """One token bucket per API key, sized by the key's role (FLOWBILL_RATE_LIMIT_<ROLE>);
    in memory, per process. Bounded: the least recently used buckets are forgotten (a
    forgotten bucket starts full again)."""

    def __init__(
        self,
        settings: Settings,
        *,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._max_keys = max_keys
        self._clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def admit(self, *, key_id: str, role: str) -> None:
        """Take a token from the key's bucket, or raise RateLimited with when one is back."""
        limit = self._settings.rate_limit(role)
        now = self._clock()
        bucket = self._buckets.get(key_id)
        if bucket is None:
            bucket = self._buckets[key_id] = _Bucket(tokens=float(limit.burst), updated=now)
            while len(self._buckets) > self._max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key_id)
            bucket.tokens = min(
                float(limit.burst), bucket.tokens + (now - bucket.updated) * limit.per_second
            )
            bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return
        metrics.HTTP_REQUESTS_REFUSED.labels("rate_limited", role).inc()
        wait = max(1, math.ceil((1.0 - bucket.tokens) / limit.per_second))
        raise RateLimited(
            f"this API key may make {limit.per_second:g} requests a second"
            f" ({limit.burst} at once); retry after {wait} s",
            retry_after_seconds=wait,
        )

    def __len__(self) -> int:
        return len(self._buckets)
