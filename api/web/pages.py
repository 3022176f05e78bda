"""What every page handler shares: the language, the signed-in session, cookies, forms."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Annotated
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

from fastapi import Depends, Request
from fastapi.responses import RedirectResponse, Response

from api.web import i18n, sessions
from api.web.sessions import WebSession
from flowbill.db import Connection
from flowbill.errors import InvalidInput
from flowbill.settings import Settings

MAX_FORM_BYTES = 16 * 1024


async def _started(request: Request) -> float:
    # The first dependency of a page: Server-Timing covers the session lookup and the reads.
    return time.perf_counter()


Started = Annotated[float, Depends(_started)]


def translator(request: Request, settings: Settings) -> i18n.Translator:
    lang = i18n.negotiate(
        request.query_params.get("lang"),
        request.cookies.get(i18n.LANG_COOKIE),
        request.headers.get("accept-language"),
    )
    return i18n.Translator(lang, ZoneInfo(settings.billing_time_zone))


def secure_cookies(request: Request, settings: Settings) -> bool:
    # Secure unless told otherwise, but in development, where the page is served over plain
    # HTTP on a loopback address (behind a proxy, the scheme comes from X-Forwarded-Proto
    # when the proxy is in FLOWBILL_FORWARDED_ALLOW_IPS).
    if settings.web_cookie_secure is not None:
        return settings.web_cookie_secure
    return settings.environment != "development" or request.url.scheme == "https"


def set_session_cookie(
    response: Response, request: Request, settings: Settings, token: str
) -> None:
    response.set_cookie(
        sessions.SESSION_COOKIE, token, max_age=int(settings.web_session_hours * 3600),
        httponly=True, secure=secure_cookies(request, settings), samesite="lax", path="/",
    )  # fmt: skip


def session_lifetime(settings: Settings) -> timedelta:
    return timedelta(hours=settings.web_session_hours)


async def current_session(request: Request, conn: Connection) -> WebSession | None:
    return await sessions.find(
        conn, request.cookies.get(sessions.SESSION_COOKIE), now=datetime.now(UTC)
    )


def to_sign_in(request: Request) -> RedirectResponse:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/sign-in?next={target}" if target != "/driver" else "/sign-in", 303)


def local_path(candidate: str | None, default: str = "/driver") -> str:
    """Only a path on this site: never an open redirect to elsewhere."""
    if not candidate or not candidate.startswith("/") or candidate.startswith("//"):
        return default
    parts = urlsplit(candidate)
    if parts.scheme or parts.netloc or "\\" in candidate:
        return default
    return candidate


async def form(request: Request) -> dict[str, str]:
    """An url-encoded form's fields (the last value of each)."""
    if request.headers.get("content-type", "").split(";")[0].strip() not in {
        "application/x-www-form-urlencoded",
        "",
    }:
        raise InvalidInput("send the form url-encoded")
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise InvalidInput("the form is too large")
    try:
        fields = parse_qs(body.decode(), keep_blank_values=True, max_num_fields=50)
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidInput("the form could not be read") from exc
    return {name: values[-1] for name, values in fields.items()}


def same_origin(request: Request) -> bool:
    """A browser's Origin header, when it sends one, names this site (defence in depth
    besides the CSRF token and SameSite cookies)."""
    origin = request.headers.get("origin")
    # Absent, or "null" (privacy settings): the CSRF token alone decides.
    if origin is None or origin == "null":
        return True
    return urlsplit(origin).netloc == request.url.netloc


def check_form(request: Request, fields: dict[str, str], *, csrf: str | None) -> None:
    """Refuse a form sent from another site, or without the CSRF token `csrf` it must carry."""
    if not same_origin(request):
        raise sessions.CsrfMismatch("the form came from another site")
    sessions.check_csrf(csrf, fields.get("csrf"))
