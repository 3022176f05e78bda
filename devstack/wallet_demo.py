"""The wallet part of `make demo`: a merchant's promotion and the check-in tool fill drivers'
wallets, which drain through carrier top-ups and the exchange — all over the HTTP API, against
the simulated gateways (slow, sometimes late, sometimes losing their answer). Transfers-in are
confirmed with the one-time code the carrier texted to the line, read where only the phone
would see it: the gateway simulator's `/_simulator` side."""

from __future__ import annotations

import random
import secrets
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx

from flowbill.units import MB


@dataclass
class WalletDemoReport:
    events: Counter[str] = field(default_factory=Counter)
    check_ins: Counter[str] = field(default_factory=Counter)
    top_ups: Counter[str] = field(default_factory=Counter)
    transfers: Counter[str] = field(default_factory=Counter)
    orders: Counter[str] = field(default_factory=Counter)
    wallets_bytes: int = 0
    books_balanced: bool = False
    problems: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        def show(counts: Counter[str]) -> str:
            return ", ".join(f"{k}={v}" for k, v in sorted(counts.items())) or "none"

        return [
            f"action events (with repeats): {show(self.events)}",
            f"check-ins (each driver twice): {show(self.check_ins)}",
            f"carrier top-ups: {show(self.top_ups)}",
            f"transfers-in: {show(self.transfers)}",
            f"exchange orders: {show(self.orders)}",
            f"data left in the drivers' wallets: {self.wallets_bytes / MB:,.1f} MB",
            "ledger check: " + ("the books balance" if self.books_balanced else str(self.problems)),
        ]


def _idem() -> dict[str, str]:
    return {"Idempotency-Key": secrets.token_hex(8)}


def _ok(answer: httpx.Response) -> dict[str, object]:
    if answer.status_code >= 300:
        raise RuntimeError(f"{answer.request.method} {answer.request.url.path}: {answer.text}")
    body: dict[str, object] = answer.json()
    return body


def run_wallet_demo(
    api: str, operator_key: str, *, gateway: str, drivers: int = 20
) -> WalletDemoReport:
    """Run the promotion-to-redemption story and report what happened."""
    report = WalletDemoReport()
    rng = random.Random(7)
    with httpx.Client(base_url=api, timeout=30) as http:
        operator = {"Authorization": f"Bearer {operator_key}"}

        def tenant(role: str, name: str) -> tuple[str, dict[str, str]]:
            made = _ok(
                http.post(
                    "/v1/operator/tenants", json={"name": name, "role": role}, headers=operator
                )
            )
            key = made["key"]["api_key"]  # type: ignore[index]
            return str(made["tenant"]["tenant_id"]), {"Authorization": f"Bearer {key}"}  # type: ignore[index]

        merchant_id, merchant = tenant("merchant", "Demo tea shop")
        partner_id, partner = tenant("partner", "Demo promotions vendor")
        _, app = tenant("app", "Demo news app")
        users = [tenant("driver", f"Demo driver {n}") for n in range(drivers)]
        carrier = "cmcc-js"
        _ok(
            http.put(
                f"/v1/operator/wallet/carriers/{carrier}",
                headers=operator,
                json={
                    "name": "China Mobile Jiangsu",
                    "package_mb": [10, 30, 50, 100, 200, 500, 1024],
                    "min_package_mb": 10,
                    "transfer_in": True,
                },
            )
        )
        envelope = _ok(
            http.post(
                "/v1/operator/wallet/catalogue",
                headers=operator,
                json={
                    "kind": "red_envelope",
                    "name": "Red envelope, 1 CNY",
                    "sku": "envelope-1",
                    "price_bytes": 100 * MB,
                    "carrier_prices": {carrier: 50 * MB},
                },
            )
        )
        goods = _ok(
            http.post(
                "/v1/operator/wallet/catalogue",
                headers=operator,
                json={
                    "kind": "merchant_goods",
                    "name": "Tea sample",
                    "sku": "tea-1",
                    "price_bytes": MB,
                    "price_minor": 1,
                    "merchant_id": merchant_id,
                    "stock": 100,
                },
            )
        )

        _ok(
            http.post(
                "/v1/merchant/data-purchases", json={"mb": 10_000}, headers={**merchant, **_idem()}
            )
        )
        allowed = http.put(f"/v1/merchant/partners/{partner_id}", headers=merchant)
        if allowed.status_code != 204:
            raise RuntimeError(allowed.text)
        favourite = _ok(
            http.post(
                "/v1/merchant/campaigns",
                headers={**merchant, **_idem()},
                json={
                    "name": "Favourite the tea shop",
                    "action": "favourite_shop",
                    "bytes_per_action": 60 * MB,
                    "per_user_limit": 2,
                    "budget_bytes": 2000 * MB,
                },
            )
        )
        share = _ok(
            http.post(
                "/v1/merchant/campaigns",
                headers={**merchant, **_idem()},
                json={
                    "name": "Share a tea",
                    "action": "share_link",
                    "bytes_per_action": 20 * MB,
                    "bytes_per_click": 5 * MB,
                    "budget_bytes": 1000 * MB,
                },
            )
        )
        _ok(
            http.post(
                "/v1/merchant/campaigns",
                headers={**merchant, **_idem()},
                json={
                    "name": "Daily check-in",
                    "action": "check_in",
                    "bytes_per_action": MB,
                    "budget_bytes": 500 * MB,
                },
            )
        )

        for n, (user_id, _) in enumerate(users):
            for attempt in range(3):
                event = {
                    "event_id": f"fav-{user_id}-{attempt // 2}",
                    "campaign_id": favourite["campaign_id"],
                    "action": "favourite_shop",
                    "user_id": user_id,
                }
                answer = http.post("/v1/partner/action-events", json=event, headers=partner)
                report.events[_event_outcome(answer)] += 1
            clicker = users[(n + 1) % len(users)][0]
            event = {
                "event_id": f"share-{user_id}",
                "campaign_id": share["campaign_id"],
                "action": "share_link",
                "user_id": user_id,
                "clicked_by": clicker,
            }
            report.events[
                _event_outcome(http.post("/v1/partner/action-events", json=event, headers=partner))
            ] += 1
        for user_id, _ in users:
            for _ in range(2):
                checked = _ok(http.post("/v1/check-ins", json={"user_id": user_id}, headers=app))
                report.check_ins["granted" if checked["data_bytes"] else "already today"] += 1

        top_ups: list[tuple[dict[str, str], str]] = []
        orders: list[tuple[dict[str, str], str]] = []
        transfers: list[tuple[dict[str, str], str]] = []
        for _, wallet in users:
            phone = "139" + "".join(rng.choice("0123456789") for _ in range(8))
            answer = http.post(
                "/v1/wallet/top-ups",
                headers={**wallet, **_idem()},
                json={
                    "carrier_id": carrier,
                    "phone": phone,
                    "package_mb": rng.choice([10, 30, 50]),
                },
            )
            if answer.status_code == 202:
                top_ups.append((wallet, answer.json()["order_id"]))
            else:
                report.top_ups[answer.json().get("type", "").rsplit("/", 1)[-1]] += 1
            item = rng.choice([envelope, goods])
            answer = http.post(
                "/v1/wallet/exchange-orders",
                headers={**wallet, **_idem()},
                json={"item_id": item["item_id"], "carrier_id": carrier},
            )
            if answer.status_code == 202:
                orders.append((wallet, answer.json()["order_id"]))
            else:
                report.orders[answer.json().get("type", "").rsplit("/", 1)[-1]] += 1
            if rng.random() < 0.3:
                answer = http.post(
                    "/v1/wallet/transfers-in",
                    headers={**wallet, **_idem()},
                    json={"carrier_id": carrier, "phone": phone, "mb": 100},
                )
                order_id = str(_ok(answer)["order_id"])
                transfers.append((wallet, order_id))
                _consent(http, gateway, wallet, order_id, phone)
        # The merchant ships its paid goods; what the gateways left open is reconciled.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for order in _every_item(http, "/v1/merchant/exchange-orders", merchant):
                if order["state"] == "paid":
                    http.post(
                        f"/v1/merchant/exchange-orders/{order['order_id']}/fulfilment",
                        json={"delivered": True, "note": "SF-demo"},
                        headers=merchant,
                    )
            if not _open(http, top_ups + transfers, orders):
                break
            time.sleep(2)
            http.post("/v1/operator/wallet/reconciliations", headers=operator)
        for wallet, order_id in top_ups:
            report.top_ups[
                str(_ok(http.get(f"/v1/wallet/carrier-orders/{order_id}", headers=wallet))["state"])
            ] += 1
        for wallet, order_id in transfers:
            report.transfers[
                str(_ok(http.get(f"/v1/wallet/carrier-orders/{order_id}", headers=wallet))["state"])
            ] += 1
        for wallet, order_id in orders:
            report.orders[
                str(
                    _ok(http.get(f"/v1/wallet/exchange-orders/{order_id}", headers=wallet))["state"]
                )
            ] += 1
        report.wallets_bytes = sum(
            int(str(_ok(http.get("/v1/wallet", headers=wallet))["data_bytes"]))
            for _, wallet in users
        )
        books = _ok(http.get("/v1/operator/wallet/ledger-check", headers=operator))
        report.books_balanced = bool(books["balanced"])
        report.problems = list(books["problems"])  # type: ignore[call-overload]
    return report


def _event_outcome(answer: httpx.Response) -> str:
    if answer.status_code == 200:
        return "repeated" if answer.json()["repeated"] else "granted"
    return str(answer.json().get("type", "error")).rsplit("/", 1)[-1]


def _every_item(http: httpx.Client, path: str, headers: dict[str, str]) -> list[dict[str, object]]:
    """Every item of a list, page after page (each answer is a Page)."""
    items: list[dict[str, object]] = []
    cursor: str | None = None
    while True:
        answer = http.get(
            path, headers=headers, params={} if cursor is None else {"cursor": cursor}
        )
        if answer.status_code >= 300:
            raise RuntimeError(answer.text)
        page = answer.json()
        items.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            return items


def _consent(
    http: httpx.Client, gateway: str, wallet: dict[str, str], order_id: str, phone: str
) -> None:
    """Read the code the carrier texted to the phone and confirm the transfer-in with it. A
    code that never arrives (the simulated carrier failing) leaves the order to expire."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        messages = httpx.get(f"{gateway}/_simulator/phones/{phone}/messages", timeout=5)
        texts = messages.json()["messages"] if messages.status_code == 200 else []
        if texts:
            for _ in range(3):
                answer = http.post(
                    f"/v1/wallet/transfers-in/{order_id}/confirmation",
                    json={"code": texts[-1]["code"]},
                    headers=wallet,
                )
                # 503: the carrier's answer was lost; the same code may be tried again.
                if answer.status_code != 503:
                    return
            return
        time.sleep(0.2)


def _open(
    http: httpx.Client,
    carrier_orders: list[tuple[dict[str, str], str]],
    exchange_orders: list[tuple[dict[str, str], str]],
) -> bool:
    for wallet, order_id in carrier_orders:
        state = http.get(f"/v1/wallet/carrier-orders/{order_id}", headers=wallet).json()["state"]
        if state in {"reserved", "submitted"}:
            return True
    for wallet, order_id in exchange_orders:
        state = http.get(f"/v1/wallet/exchange-orders/{order_id}", headers=wallet).json()["state"]
        if state in {"placed", "paid"}:
            return True
    return False
