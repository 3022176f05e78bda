"""The IoT card part of `make demo`: the operator imports a carrier's batch and sets a plan, a
merchant prices it, buyers buy cards, verify their real names and activate them on their
devices, recharge, move a card to another device, and one order is refunded — all over the HTTP
API, against the simulated payment gateway, identity-check provider and invoicing service."""

from __future__ import annotations

import secrets
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import date

import httpx

from ingest.protocol import iccid_check_digit
from iot_cards.idcheck import check_digit

TAX_ID = "91350100M000100Y43"
NAMES = ("张小三", "李四", "王小明", "欧阳娜娜", "John Doe", "赵六", "孙七", "周八")


@dataclass
class IotDemoReport:
    cards_imported: int = 0
    orders: Counter[str] = field(default_factory=Counter)
    verifications: Counter[str] = field(default_factory=Counter)
    cards: Counter[str] = field(default_factory=Counter)
    invoices: Counter[str] = field(default_factory=Counter)
    statement: dict[str, object] = field(default_factory=dict)
    sample_pdf_bytes: int = 0

    def lines(self) -> list[str]:
        def show(counts: Counter[str]) -> str:
            return ", ".join(f"{k}={v}" for k, v in sorted(counts.items())) or "none"

        return [
            f"IoT cards imported: {self.cards_imported}",
            f"IoT orders: {show(self.orders)}",
            f"real-name verifications: {show(self.verifications)}",
            f"cards by state: {show(self.cards)}",
            f"invoices (blue, red-letter): {show(self.invoices)};"
            f" a PDF is {self.sample_pdf_bytes:,} bytes",
            f"merchant statement this month: {self.statement}",
        ]


def _ok(answer: httpx.Response) -> dict[str, object]:
    if answer.status_code >= 300:
        raise RuntimeError(f"{answer.request.method} {answer.request.url.path}: {answer.text}")
    body: dict[str, object] = answer.json()
    return body


def _idem(headers: dict[str, str]) -> dict[str, str]:
    return {**headers, "Idempotency-Key": secrets.token_hex(8)}


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _every(http: httpx.Client, headers: dict[str, str], path: str) -> list[dict[str, object]]:
    """Every item of a list, page after page."""
    items: list[dict[str, object]] = []
    params: dict[str, str] = {}
    while True:
        page = _ok(http.get(path, headers=headers, params=params))
        found = page["items"]
        assert isinstance(found, list)
        items.extend(found)
        if page["next_cursor"] is None:
            return items
        params = {"cursor": str(page["next_cursor"])}


def _wait(
    http: httpx.Client, headers: dict[str, str], path: str, field_: str, until: set[str]
) -> dict[str, object]:
    deadline = time.monotonic() + 30
    while True:
        found = _ok(http.get(path, headers=headers))
        if found[field_] in until or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def _tenant(http: httpx.Client, operator: dict[str, str], name: str, role: str) -> tuple[str, str]:
    made = _ok(
        http.post("/v1/operator/tenants", json={"name": name, "role": role}, headers=operator)
    )
    tenant, key = made["tenant"], made["key"]
    assert isinstance(tenant, dict)
    assert isinstance(key, dict)
    return str(tenant["tenant_id"]), str(key["api_key"])


def run_iot_demo(api: str, operator_key: str, *, buyers: int = 6) -> IotDemoReport:
    """Run the import-to-refund story and report what happened."""
    report = IotDemoReport()
    with httpx.Client(base_url=api, timeout=30) as http:
        operator = _bearer(operator_key)
        merchant_id, merchant_key = _tenant(http, operator, "深圳物联科技", "merchant")
        merchant = _bearer(merchant_key)
        prefix = "8986" + "".join(secrets.choice("0123456789") for _ in range(9))
        rows = []
        for n in range(buyers + 4):
            body = f"{prefix}{n:06d}"
            rows.append(
                (
                    body + iccid_check_digit(body),
                    f"46011{secrets.randbelow(10**10):010d}",
                    f"1064{secrets.randbelow(10**9):09d}",
                )
            )
        batch = "iccid,imsi,msisdn\n" + "".join(f"{a},{b},{c}\n" for a, b, c in rows)
        imported = _ok(
            http.post(
                "/v1/operator/iot/card-imports",
                params={"carrier": "cmcc-iot", "label": "demo"},
                content=batch.encode(),
                headers={**operator, "Content-Type": "text/csv"},
            )
        )
        report.cards_imported = int(str(imported["cards"]))
        _ok(
            http.post(
                "/v1/operator/iot/card-assignments",
                headers=operator,
                json={
                    "merchant_id": merchant_id,
                    "first_iccid": rows[0][0],
                    "last_iccid": rows[-1][0],
                },
            )
        )
        monthly = _ok(
            http.post(
                "/v1/operator/iot/plans",
                headers=operator,
                json={
                    "name": "车联网 1 GB 月包",
                    "kind": "monthly",
                    "data_mb": 1024,
                    "months": 12,
                    "wholesale_minor": 1000,
                },
            )
        )
        top_up = _ok(
            http.post(
                "/v1/operator/iot/plans",
                headers=operator,
                json={
                    "name": "500 MB 加油包",
                    "kind": "top_up",
                    "data_mb": 500,
                    "wholesale_minor": 400,
                },
            )
        )
        _ok(
            http.put(
                "/v1/merchant/iot/profile",
                headers=merchant,
                json={"seller_name": "深圳物联科技有限公司", "tax_id": TAX_ID},
            )
        )
        for plan, retail in ((monthly, 3000), (top_up, 800)):
            _ok(
                http.put(
                    f"/v1/merchant/iot/plans/{plan['plan_id']}",
                    headers=merchant,
                    json={"retail_minor": retail},
                )
            )
        holders = []
        for n in range(buyers):
            _, key = _tenant(http, operator, f"iot holder {n}", "driver")
            holder = _bearer(key)
            placed = _ok(
                http.post(
                    "/v1/iot/orders",
                    headers=_idem(holder),
                    json={"merchant_id": merchant_id, "plan_id": monthly["plan_id"]},
                )
            )
            order = _wait(
                http, holder, f"/v1/iot/orders/{placed['order_id']}", "state", {"paid", "failed"}
            )
            report.orders[f"purchase {order['state']}"] += 1
            if order["state"] != "paid":
                continue
            iccid = str(order["iccid"])
            born = date(1970 + n * 5, 1 + n % 12, 1 + n)
            first17 = f"440305{born:%Y%m%d}{secrets.randbelow(1000):03d}"
            _ok(
                http.post(
                    f"/v1/iot/cards/{iccid}/verification",
                    headers=_idem(holder),
                    json={
                        "name": NAMES[n % len(NAMES)],
                        "id_number": first17 + check_digit(first17),
                        "phone": f"139{secrets.randbelow(10**8):08d}",
                    },
                )
            )
            checked = _wait(
                http,
                holder,
                f"/v1/iot/cards/{iccid}/verification",
                "state",
                {"verified", "rejected"},
            )
            report.verifications[str(checked["state"])] += 1
            if checked["state"] != "verified":
                continue
            imei_body = f"86{secrets.randbelow(10**12):012d}"
            _ok(
                http.post(
                    f"/v1/iot/cards/{iccid}/activation",
                    headers=_idem(holder),
                    json={"imei": imei_body + iccid_check_digit(imei_body)},
                )
            )
            holders.append((holder, iccid, str(order["order_id"])))
        for holder, iccid, _ in holders[:2]:
            placed = _ok(
                http.post(
                    f"/v1/iot/cards/{iccid}/recharges",
                    headers=_idem(holder),
                    json={"plan_id": top_up["plan_id"]},
                )
            )
            order = _wait(
                http, holder, f"/v1/iot/orders/{placed['order_id']}", "state", {"paid", "failed"}
            )
            report.orders[f"recharge {order['state']}"] += 1
        if len(holders) > 2:
            holder, iccid, _ = holders[2]
            moved = f"35{secrets.randbelow(10**12):012d}"
            _ok(
                http.post(
                    f"/v1/iot/cards/{iccid}/device-reports",
                    headers=holder,
                    json={"imei": moved + iccid_check_digit(moved)},
                )
            )
        if len(holders) > 3:
            _, _, order_id = holders[3]
            _ok(
                http.post(
                    f"/v1/merchant/iot/orders/{order_id}/refunds",
                    headers=_idem(merchant),
                    json={"reason": "device returned"},
                )
            )
            _wait(
                http,
                merchant,
                f"/v1/merchant/iot/orders/{order_id}/refund",
                "state",
                {"refunded", "failed"},
            )
        time.sleep(1.0)
        for card in _every(http, merchant, "/v1/merchant/iot/cards"):
            report.cards[str(card["state"])] += 1
        invoices = _every(http, merchant, "/v1/merchant/iot/invoices")
        for invoice in invoices:
            report.invoices[f"{invoice['colour']} {invoice['state']}"] += 1
        issued = [i for i in invoices if i["state"] == "issued"]
        if issued:
            pdf = http.get(
                f"/v1/merchant/iot/invoices/{issued[0]['invoice_id']}/pdf", headers=merchant
            )
            report.sample_pdf_bytes = len(pdf.content)
        if holders:
            # This month as the API's billing calendar has it (the zone is its setting).
            holder, iccid, _ = holders[0]
            month = _ok(http.get(f"/v1/iot/cards/{iccid}/usage", headers=holder))["period"]
            statement = _ok(http.get(f"/v1/merchant/iot/statements/{month}", headers=merchant))
            totals = statement["totals"]
            assert isinstance(totals, dict)
            report.statement = totals
    return report
