"""The one error base class: every domain error carries an HTTP status and a stable type."""

from __future__ import annotations

from typing import Any, ClassVar


class FlowbillError(Exception):
    """A failure a caller can act on, rendered as RFC 9457 problem+json by the API.

    `type_` is stable and documented: clients match on it, never on `detail`.
    """

    status: ClassVar[int] = 400
    type_: ClassVar[str] = "bad-request"
    title: ClassVar[str] = "Bad request"

    def __init__(self, detail: str, **extensions: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extensions = extensions

    def problem(self, instance: str | None = None) -> dict[str, Any]:
        """The problem document for this error."""
        body: dict[str, Any] = {
            "type": f"https://flowbill.dev/problems/{self.type_}",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if instance is not None:
            body["instance"] = instance
        body.update(self.extensions)
        return body

    def response_headers(self) -> dict[str, str]:
        """HTTP headers that go with the problem (e.g. Retry-After)."""
        return {"WWW-Authenticate": "Bearer"} if self.status == 401 else {}


class NotFound(FlowbillError):
    status = 404
    type_ = "not-found"
    title = "Not found"


class Conflict(FlowbillError):
    status = 409
    type_ = "conflict"
    title = "Conflict"


class Unauthenticated(FlowbillError):
    status = 401
    type_ = "unauthenticated"
    title = "Authentication required"


class Forbidden(FlowbillError):
    status = 403
    type_ = "forbidden"
    title = "Forbidden"


class InvalidInput(FlowbillError):
    status = 422
    type_ = "invalid-input"
    title = "Invalid input"


class Unavailable(FlowbillError):
    status = 503
    type_ = "unavailable"
    title = "Service unavailable"


class StatementTimeout(Unavailable):
    """A database statement ran past the component's statement_timeout and was cancelled;
    its transaction was rolled back, so retrying is safe."""

    type_ = "statement-timeout"
    title = "The database took too long"

    def response_headers(self) -> dict[str, str]:
        return {"Retry-After": "1"}
