"""Signing in to the driver page (an API key pasted into a form, or a one-time link),
signing out, and the language switch; and the API call that makes a one-time link."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel

from api.deps import ConnDep, DriverCaller, SettingsDep
from api.web import i18n, pages, sessions
from api.web.templating import render
from flowbill.errors import FlowbillError

router = APIRouter(include_in_schema=False)
api_router = APIRouter(prefix="/v1/me", tags=["me"])


class SignInLink(BaseModel):
    url: str
    expires_at: datetime


@api_router.post("/sign-in-links", status_code=status.HTTP_201_CREATED)
async def create_sign_in_link(
    conn: ConnDep, settings: SettingsDep, caller: DriverCaller, request: Request
) -> SignInLink:
    """A one-time link that signs you in to the driver page: valid 15 minutes, once."""
    token, expires_at = await sessions.create_link(
        conn, tenant_id=caller.tenant_id, now=datetime.now(UTC)
    )
    base = settings.public_url or str(request.base_url)
    return SignInLink(url=sessions.link_url(base, token), expires_at=expires_at)


def _sign_in_page(
    request: Request,
    settings: SettingsDep,
    *,
    next_path: str,
    error: FlowbillError | None = None,
    notice: str | None = None,
) -> HTMLResponse:
    t = pages.translator(request, settings)
    csrf = request.cookies.get(sessions.SIGN_IN_CSRF_COOKIE) or sessions.new_token()
    problem = error.problem() if error is not None else None
    response = render(
        "sign_in.html", t,
        {"csrf": csrf, "next_path": next_path, "problem": problem, "notice": notice,
         "here": request.url.path},
        status_code=error.status if error is not None else 200,
    )  # fmt: skip
    response.set_cookie(
        sessions.SIGN_IN_CSRF_COOKIE, csrf, max_age=3600, httponly=True,
        secure=pages.secure_cookies(request, settings), samesite="strict", path="/sign-in",
    )  # fmt: skip
    return response


@router.get("/sign-in")
async def sign_in_form(
    request: Request,
    settings: SettingsDep,
    next_path: Annotated[str | None, Query(alias="next", max_length=500)] = None,
    signed_out: bool = False,
) -> HTMLResponse:
    t = pages.translator(request, settings)
    return _sign_in_page(
        request, settings, next_path=pages.local_path(next_path),
        notice=t("signed_out") if signed_out else None,
    )  # fmt: skip


async def _signed_in(
    request: Request, settings: SettingsDep, conn: ConnDep, token: str, next_path: str
) -> RedirectResponse:
    # A new sign-in ends the session the browser held before, if any.
    await sessions.sign_out(
        conn, request.cookies.get(sessions.SESSION_COOKIE), now=datetime.now(UTC)
    )
    response = RedirectResponse(next_path, status.HTTP_303_SEE_OTHER)
    pages.set_session_cookie(response, request, settings, token)
    response.delete_cookie(sessions.SIGN_IN_CSRF_COOKIE, path="/sign-in")
    return response


@router.post("/sign-in")
async def sign_in(request: Request, conn: ConnDep, settings: SettingsDep) -> Response:
    fields = await pages.form(request)
    next_path = pages.local_path(fields.get("next"))
    try:
        if not pages.same_origin(request):
            raise sessions.CsrfMismatch("the form came from another site")
        sessions.check_csrf(request.cookies.get(sessions.SIGN_IN_CSRF_COOKIE), fields.get("csrf"))
        token = await sessions.sign_in_with_key(
            conn, fields.get("api_key", ""), lifetime=pages.session_lifetime(settings),
            now=datetime.now(UTC),
        )  # fmt: skip
    except FlowbillError as error:
        return _sign_in_page(request, settings, next_path=next_path, error=error)
    return await _signed_in(request, settings, conn, token, next_path)


@router.get("/sign-in/link")
async def sign_in_with_link(
    request: Request,
    conn: ConnDep,
    settings: SettingsDep,
    token: Annotated[str, Query(max_length=100)] = "",
) -> Response:
    try:
        session_token = await sessions.sign_in_with_link(
            conn, token, lifetime=pages.session_lifetime(settings), now=datetime.now(UTC)
        )
    except FlowbillError as error:
        return _sign_in_page(request, settings, next_path="/driver", error=error)
    return await _signed_in(request, settings, conn, session_token, "/driver")


@router.post("/sign-out")
async def sign_out(request: Request, conn: ConnDep, settings: SettingsDep) -> Response:
    fields = await pages.form(request)
    session = await pages.current_session(request, conn)
    if session is not None:
        try:
            sessions.check_csrf(session.csrf_token, fields.get("csrf"))
        except FlowbillError as error:
            return _sign_in_page(request, settings, next_path="/driver", error=error)
        await sessions.sign_out(
            conn, request.cookies.get(sessions.SESSION_COOKIE), now=datetime.now(UTC)
        )
    response = RedirectResponse("/sign-in?signed_out=true", status.HTTP_303_SEE_OTHER)
    response.delete_cookie(sessions.SESSION_COOKIE, path="/")
    return response


@router.get("/lang/{lang}")
async def switch_language(
    lang: str,
    request: Request,
    settings: SettingsDep,
    next_path: Annotated[str | None, Query(alias="next", max_length=500)] = None,
) -> RedirectResponse:
    response = RedirectResponse(pages.local_path(next_path), status.HTTP_303_SEE_OTHER)
    if lang in i18n.LANGUAGES:
        response.set_cookie(
            i18n.LANG_COOKIE, lang, max_age=365 * 24 * 3600, httponly=True,
            secure=pages.secure_cookies(request, settings), samesite="lax", path="/",
        )  # fmt: skip
    return response
