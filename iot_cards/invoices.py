"""Electronic invoices: the amounts (tax-inclusive price split into amount and VAT, rounded
half-up once), the invoice document, its 20-digit number, and a PDF a person can read.

A red-letter invoice cancels a blue one: the same lines with negative quantity and amounts,
and the original's number. Together they net to zero; neither is ever deleted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from iot_cards import pdf

# Telecom value-added services (data plans sold as a service): 6 % VAT.
TAX_RATE = Decimal("0.06")
INDIVIDUAL = "个人"
NUMBER = re.compile(r"[0-9]{20}")


@dataclass(frozen=True, slots=True)
class Amounts:
    amount_minor: int
    tax_minor: int
    total_minor: int


def split_tax(total_minor: int, rate: Decimal = TAX_RATE) -> Amounts:
    """A tax-inclusive total as amount + tax; the amount is rounded half-up to the fen."""
    amount = (Decimal(total_minor) / (1 + rate)).quantize(Decimal(1), rounding=ROUND_HALF_UP)
    return Amounts(int(amount), total_minor - int(amount), total_minor)


def is_invoice_number(number: object) -> bool:
    return isinstance(number, str) and NUMBER.fullmatch(number) is not None


def _yuan(minor: int) -> str:
    return f"{Decimal(minor) / 100:.2f}"


def blue_document(
    *,
    order_id: str,
    kind: str,
    plan_name: str,
    iccid: str,
    total_minor: int,
    currency: str,
    seller_name: str,
    seller_tax_id: str,
    buyer_name: str,
    buyer_tax_id: str | None,
) -> dict[str, Any]:
    """The invoice for a paid order, before the authority numbers it."""
    amounts = split_tax(total_minor)
    item = "物联网卡及套餐" if kind == "purchase" else "物联网卡充值"
    return {
        "colour": "blue",
        "number": None,
        "issued_on": None,
        "original_number": None,
        "order_id": order_id,
        "seller": {"name": seller_name, "tax_id": seller_tax_id},
        "buyer": {"name": buyer_name, "tax_id": buyer_tax_id},
        "lines": [
            {
                "item": f"*电信服务*{item} {plan_name}",
                "card": iccid,
                "quantity": 1,
                "unit_price": _yuan(amounts.amount_minor),
                "amount_minor": amounts.amount_minor,
                "tax_rate": str(TAX_RATE),
                "tax_minor": amounts.tax_minor,
            }
        ],
        "amount_minor": amounts.amount_minor,
        "tax_minor": amounts.tax_minor,
        "total_minor": amounts.total_minor,
        "currency": currency,
    }


def red_document(original: dict[str, Any], *, original_number: str) -> dict[str, Any]:
    """The red-letter invoice that cancels `original` (already numbered)."""
    lines = [
        {
            **line,
            "quantity": -line["quantity"],
            "amount_minor": -line["amount_minor"],
            "tax_minor": -line["tax_minor"],
        }
        for line in original["lines"]
    ]
    return {
        **original,
        "colour": "red",
        "number": None,
        "issued_on": None,
        "original_number": original_number,
        "lines": lines,
        "amount_minor": -original["amount_minor"],
        "tax_minor": -original["tax_minor"],
        "total_minor": -original["total_minor"],
    }


def numbered(document: dict[str, Any], *, number: str, issued_on: date) -> dict[str, Any]:
    return {**document, "number": number, "issued_on": issued_on.isoformat()}


def render_pdf(document: dict[str, Any]) -> bytes:
    """The invoice as a one-page PDF: header, parties, lines, totals."""
    red = document["colour"] == "red"
    ink = (0.75, 0.1, 0.1) if red else (0.1, 0.2, 0.55)
    page = pdf.Page()
    width, height = pdf.A4
    left, right = 40.0, width - 40.0
    y = height - 60
    page.text(left, y, "电子发票（普通发票）", size=16, colour=ink)
    subtitle = "Electronic invoice (ordinary VAT invoice)"
    page.text(left, y - 20, ("红字 Red-letter. " if red else "") + subtitle, size=10, colour=ink)
    page.text(360, y, f"发票号码 No.: {document['number'] or 'pending'}", size=10)
    page.text(360, y - 16, f"开票日期 Date: {document['issued_on'] or '-'}", size=10)
    if document.get("original_number"):
        page.text(
            360, y - 32, f"原发票 Cancels: {document['original_number']}", size=10, colour=ink
        )
    y -= 60
    page.rect(left, y - 70, right - left, 70, colour=ink)
    page.line(width / 2, y, width / 2, y - 70, colour=ink)
    seller, buyer = document["seller"], document["buyer"]
    page.text(left + 8, y - 16, "购买方 Buyer", size=10, bold=True, colour=ink)
    page.text(left + 8, y - 34, f"名称 Name: {buyer['name']}", size=10)
    page.text(left + 8, y - 52, f"税号 Tax id: {buyer['tax_id'] or '-'}", size=10)
    page.text(width / 2 + 8, y - 16, "销售方 Seller", size=10, bold=True, colour=ink)
    page.text(width / 2 + 8, y - 34, f"名称 Name: {seller['name']}", size=10)
    page.text(width / 2 + 8, y - 52, f"税号 Tax id: {seller['tax_id']}", size=10)
    y -= 100
    columns = (
        (left + 6, "项目 Item"),
        (285, "数量 Qty"),
        (330, "单价 Unit price"),
        (400, "金额 Amount"),
        (470, "税率 Rate"),
        (515, "税额 Tax"),
    )
    for x, label in columns:
        page.text(x, y, label, size=8, bold=True, colour=ink)
    page.line(left, y - 6, right, y - 6, colour=ink)
    y -= 22
    for line in document["lines"]:
        page.text(left + 6, y, str(line["item"]), size=9)
        page.text(left + 6, y - 12, f"ICCID {line['card']}", size=7)
        page.text(285, y, str(line["quantity"]), size=9)
        page.text(330, y, str(line["unit_price"]), size=9)
        page.text(400, y, _yuan(line["amount_minor"]), size=9)
        page.text(470, y, f"{Decimal(line['tax_rate']) * 100:.0f}%", size=9)
        page.text(515, y, _yuan(line["tax_minor"]), size=9)
        y -= 30
    page.line(left, y, right, y, colour=ink)
    y -= 20
    currency = document["currency"]
    page.text(left + 6, y, "合计 Total", size=10, bold=True)
    page.text(400, y, _yuan(document["amount_minor"]), size=10)
    page.text(515, y, _yuan(document["tax_minor"]), size=10)
    y -= 22
    page.text(
        left + 6,
        y,
        f"价税合计 Total incl. tax: {currency} {_yuan(document['total_minor'])}",
        size=12,
        bold=True,
        colour=ink,
    )
    y -= 40
    page.text(left, y, f"Order {document['order_id']}", size=8, colour=(0.4, 0.4, 0.4))
    return pdf.render(page, title=f"发票 {document['number'] or ''}")
