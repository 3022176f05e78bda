"""Rendering the driver page: Jinja2 templates (autoescaped), the static files' place, and the
headers every page carries (no caching, a strict Content-Security-Policy, Server-Timing)."""

from __future__ import annotations

import time
from datetime import date
from pathlib import Path
from typing import Any

from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from api.web.i18n import Translator

HERE = Path(__file__).resolve().parent.parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"
# Fetched by scripts/setup.sh (npm pack), never committed; without it the page says so and
# still shows every number in its tables.
CHART_FILE = STATIC / "vendor" / "chart.umd.js"

_env = Environment(
    loader=FileSystemLoader(TEMPLATES),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
    auto_reload=False,
)
_env.filters["as_date"] = date.fromisoformat

# Nothing but our own origin: no CDN, no inline script (chart data travels as JSON blocks).
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


def charts_available() -> bool:
    return CHART_FILE.is_file()


def render(
    name: str,
    t: Translator,
    context: dict[str, Any],
    *,
    status_code: int = 200,
    started: float | None = None,
) -> HTMLResponse:
    """A page from its template, with the translator `t` and the chart flag in context."""
    html = _env.get_template(name).render(t=t, charts=charts_available(), **context)
    headers = {
        "Content-Security-Policy": CSP,
        "Cache-Control": "no-store",
        "X-Content-Type-Options": "nosniff",
        # Never a Referer to other sites; our own forms keep a real Origin header.
        "Referrer-Policy": "same-origin",
        "Content-Language": t("html_lang"),
    }
    if started is not None:
        headers["Server-Timing"] = f"app;dur={(time.perf_counter() - started) * 1000:.2f}"
    return HTMLResponse(html, status_code=status_code, headers=headers)
