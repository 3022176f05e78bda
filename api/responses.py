"""Answers that are not JSON: CSV downloads of statements and reports, PDF invoices."""

from __future__ import annotations

from typing import Any

from fastapi import Response

CSV_MEDIA_TYPE = "text/csv; charset=utf-8"
CSV_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/csv": {}}, "description": "The lines as CSV."}
}


def csv_response(text: str, *, filename: str) -> Response:
    """A CSV file the browser saves as `filename`."""
    return Response(
        content=text.encode("utf-8"),
        media_type=CSV_MEDIA_TYPE,
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


PDF_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/pdf": {}}, "description": "The document as a PDF."}
}


def pdf_response(pdf: bytes) -> Response:
    """A PDF document."""
    return Response(content=pdf, media_type="application/pdf")
