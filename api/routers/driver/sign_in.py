"""Signing in to the driver page (an API key pasted into a form, or a one-time link opened,
then confirmed with a POST), signing out (here or everywhere), and the language switch; and
the API calls that make a one-time link and end every session."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel

from api.deps import ConnDep, CurrentCaller, DriverCaller, SettingsDep
from api.web import i18n, pages, sessions
from api.web.templating import render
from flowbill.errors import FlowbillError

router = APIRouter(include_in_schema=False)
api_router = APIRouter(prefix="/v1/me", tags=["me"])


class SignInLink(BaseModel):
    url: str
    expires_at: datetime


class SessionsEnded(BaseModel):
    ended_sessions: int


@api_router.post("/sign-in-links", status_code=status.HTTP_201_CREATED)
async def create_sign_in_link(
    conn: ConnDep, settings: SettingsDep, caller: DriverCaller, request: Request
) -> SignInLink:
    """A one-time link that signs you in to the driver page: valid 15 minutes, once."""
    token, expires_at = await sessions.create_link(conn, caller=caller, now=datetime.now(UTC))
    # The address people reach the page at, never PUBLIC_URL (where the gateways call back,
    # possibly an internal one).
    base = settings.web_url or str(request.base_url)
    return SignInLink(url=sessions.link_url(base, token), expires_at=expires_at)


@api_router.post("/sessions/end-all")
async def end_all_sessions(conn: ConnDep, caller: CurrentCaller) -> SessionsEnded:
    """Sign out everywhere: end every browser session of your tenant on the driver page, and
    void its unused sign-in links. Your API keys keep working."""
    ended = await sessions.sign_out_everywhere(conn, caller.tenant_id, now=datetime.now(UTC))
    return SessionsEnded(ended_sessions=ended)


def _sign_in_page(
    request: Request,
    settings: SettingsDep,
    *,
    next_path: str,
    error: FlowbillError | None = None,
    notice: str | None = None,
    template: str = "sign_in.html",
    extra: dict[str, str] | None = None,
) -> HTMLResponse:
    t = pages.translator(request, settings)
    csrf = request.cookies.get(sessions.SIGN_IN_CSRF_COOKIE) or sessions.new_token()
    problem = error.problem() if error is not None else None
    response = render(
        template, t,
        {"csrf": csrf, "next_path": next_path, "problem": problem, "notice": notice,
         "here": request.url.path, **(extra or {})},
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
    signed_out: Annotated[str | None, Query(max_length=20)] = None,
) -> HTMLResponse:
    t = pages.translator(request, settings)
    notice = None
    if signed_out:
        notice = t("signed_out_everywhere" if signed_out == "everywhere" else "signed_out")
    return _sign_in_page(request, settings, next_path=pages.local_path(next_path), notice=notice)


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
        pages.check_form(request, fields, csrf=request.cookies.get(sessions.SIGN_IN_CSRF_COOKIE))
        token = await sessions.sign_in_with_key(
            conn, fields.get("api_key", ""), lifetime=pages.session_lifetime(settings),
            now=datetime.now(UTC),
        )  # fmt: skip
    except FlowbillError as error:
        return _sign_in_page(request, settings, next_path=next_path, error=error)
    return await _signed_in(request, settings, conn, token, next_path)


def _link_page(
    request: Request,
    settings: SettingsDep,
    token: str,
    *,
    name: str | None,
    error: FlowbillError | None = None,
) -> HTMLResponse:
    """The link's page: whose account it opens and a "Sign in" button (a POST), or why the
    link no longer works."""
    # The language switch comes back to this page, which consumes nothing.
    here = f"/sign-in/link?{urlencode({'token': token})}" if name else "/sign-in/link"
    extra = {"token": token, "name": name or "", "here": here}
    return _sign_in_page(
        request, settings, next_path="/driver", error=error, template="sign_in_link.html",
        extra=extra,
    )  # fmt: skip


@router.get("/sign-in/link")
async def sign_in_link_page(
    request: Request,
    conn: ConnDep,
    settings: SettingsDep,
    token: Annotated[str, Query(max_length=100)] = "",
) -> Response:
    # Never consumes the link: scanners and previews open it too.
    try:
        name = await sessions.check_link(conn, token, now=datetime.now(UTC))
    except FlowbillError as error:
        return _link_page(request, settings, token, name=None, error=error)
    return _link_page(request, settings, token, name=name)


@router.post("/sign-in/link")
async def sign_in_with_link(request: Request, conn: ConnDep, settings: SettingsDep) -> Response:
    fields = await pages.form(request)
    token = fields.get("token", "")
    try:
        # The form's token before the link's: a forged post consumes nothing.
        pages.check_form(request, fields, csrf=request.cookies.get(sessions.SIGN_IN_CSRF_COOKIE))
        session_token = await sessions.sign_in_with_link(
            conn, token, lifetime=pages.session_lifetime(settings), now=datetime.now(UTC)
        )
    except sessions.CsrfMismatch as error:
        name = None
        with contextlib.suppress(FlowbillError):
            name = await sessions.check_link(conn, token, now=datetime.now(UTC))
        return _link_page(request, settings, token, name=name, error=error)
    except FlowbillError as error:
        return _link_page(request, settings, token, name=None, error=error)
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


@router.post("/sign-out-everywhere")
async def sign_out_everywhere(request: Request, conn: ConnDep, settings: SettingsDep) -> Response:
    fields = await pages.form(request)
    session = await pages.current_session(request, conn)
    if session is None:
        return RedirectResponse("/sign-in", status.HTTP_303_SEE_OTHER)
    try:
        pages.check_form(request, fields, csrf=session.csrf_token)
    except FlowbillError as error:
        return _sign_in_page(request, settings, next_path="/driver", error=error)
    await sessions.sign_out_everywhere(conn, session.tenant_id, now=datetime.now(UTC))
    response = RedirectResponse("/sign-in?signed_out=everywhere", status.HTTP_303_SEE_OTHER)
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
