"""The sponsor part of `make demo`: the car scenario over the HTTP API. An automaker pays its
vehicles' telematics, backend and OTA traffic, a map vendor navigation, map updates and traffic
information, a music provider streaming up to 1 GB per SIM per month; drivers pay the rest from
their wallets (a shop's promotion filled some of them), and overage after that."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx

from flowbill.units import MB

GB = 1024 * MB
CATALOGUE = {
    "telematics": "telematics", "backend": "backend", "ota.update": "ota",
    "nav.amap": "navigation", "map.update": "map_update", "traffic.info": "traffic_info",
    "music.qq": "music", "fm.radio": "fm", "video.iqiyi": "video",
    "wifi.hotspot": "wifi_hotspot", "iot.sensor": "other",
}  # fmt: skip
VIN_ALPHABET = "ABCDEFGHJKLMNPRSTUVWXYZ0123456789"


def _ok(answer: httpx.Response) -> dict[str, object]:
    if answer.status_code >= 300:
        raise RuntimeError(f"{answer.request.method} {answer.request.url.path}: {answer.text}")
    body: dict[str, object] = answer.json() if answer.content else {}
    return body


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@dataclass
class CarScenario:
    """Who is who in the scenario: names and keys of the sponsors, the drivers' keys."""

    sponsors: dict[str, tuple[str, dict[str, str]]] = field(default_factory=dict)
    drivers: dict[str, dict[str, str]] = field(default_factory=dict)
    vehicles: int = 0
    funded_drivers: int = 0


def set_up(
    api: str, operator_key: str, *, vehicle_iccids: list[str], valid_from: datetime
) -> CarScenario:
    """Catalogue, sponsors, vehicles (SIMs owned by the automaker, drivers who accepted their
    invitations), policies; some wallets filled."""
    scenario = CarScenario()
    operator = _auth(operator_key)
    with httpx.Client(base_url=api, timeout=30) as http:

        def tenant(role: str, name: str) -> tuple[str, dict[str, str]]:
            made = _ok(
                http.post(
                    "/v1/operator/tenants", json={"name": name, "role": role}, headers=operator
                )
            )
            key = made["key"]["api_key"]  # type: ignore[index]
            return str(made["tenant"]["tenant_id"]), _auth(str(key))  # type: ignore[index]

        for app, category in CATALOGUE.items():
            _ok(http.put(f"/v1/operator/catalogue/apps/{app}", json={"category": category},
                         headers=operator))  # fmt: skip
        for name in ("Voyah Motors", "AutoNavi Maps", "QQ Music"):
            scenario.sponsors[name] = tenant("sponsor", name)
        automaker_id, automaker = scenario.sponsors["Voyah Motors"]
        for partner in ("AutoNavi Maps", "QQ Music"):
            _ok(http.put(f"/v1/sponsor/partners/{scenario.sponsors[partner][0]}",
                         headers=automaker))  # fmt: skip
        # The operator gives the fleet's SIMs to the automaker: only then may it fit them.
        _ok(http.post("/v1/operator/sims", headers=operator,
                      json={"iccids": vehicle_iccids, "owner_id": automaker_id}))  # fmt: skip
        for n, iccid in enumerate(vehicle_iccids):
            driver_id, driver = tenant("driver", f"Demo car driver {n}")
            scenario.drivers[driver_id] = driver
            vin = "LDP" + "".join(secrets.choice(VIN_ALPHABET) for _ in range(14))
            _ok(http.put(
                f"/v1/sponsor/vehicles/{vin}", headers=automaker,
                json={"model": "Free" if n % 3 else "Dreamer", "fleet": None,
                      "driver_id": driver_id, "iccids": [iccid]},
            ))  # fmt: skip
            # Naming a driver invites them; their wallet pays only once they accept.
            _ok(http.post(f"/v1/driver/vehicle-invitations/{vin}/accept", headers=driver))
        scenario.vehicles = len(vehicle_iccids)
        scope = {"kind": "automaker", "automaker_id": automaker_id}
        policies = [
            ("Voyah Motors", {"name": "Connected services for life",
                              "categories": ["telematics", "backend", "ota"],
                              "unit_price": "0.02", "priority": 10}),
            ("AutoNavi Maps", {"name": "Navigation and maps",
                               "categories": ["navigation", "map_update", "traffic_info"],
                               "unit_price": "0.03", "budget_minor": 50_000_00}),
            ("QQ Music", {"name": "Music up to 1 GB a month", "categories": ["music"],
                          "cap_bytes": GB, "unit_price": "0.05"}),
        ]  # fmt: skip
        for sponsor, body in policies:
            _ok(http.post(
                "/v1/sponsor/policies", headers={**scenario.sponsors[sponsor][1],
                                                 "Idempotency-Key": secrets.token_hex(8)},
                json={**body, "scope": scope, "valid_from": valid_from.isoformat()},
            ))  # fmt: skip
        scenario.funded_drivers = _fill_wallets(http, tenant, list(scenario.drivers)[::4])
    return scenario


def _fill_wallets(
    http: httpx.Client, tenant: Callable[[str, str], tuple[str, dict[str, str]]],
    drivers: list[str],
) -> int:  # fmt: skip
    """A shop rewards every fourth driver with 200 MB for favouriting it."""
    _, merchant = tenant("merchant", "Demo car accessories shop")
    partner_id, partner = tenant("partner", "Demo car promotions vendor")
    _ok(http.post("/v1/merchant/data-purchases", json={"mb": 200 * len(drivers)},
                  headers={**merchant, "Idempotency-Key": secrets.token_hex(8)}))  # fmt: skip
    http.put(f"/v1/merchant/partners/{partner_id}", headers=merchant)
    campaign = _ok(http.post(
        "/v1/merchant/campaigns", headers={**merchant, "Idempotency-Key": secrets.token_hex(8)},
        json={"name": "Favourite us", "action": "favourite_shop", "bytes_per_action": 200 * MB,
              "budget_bytes": 200 * MB * len(drivers)},
    ))  # fmt: skip
    for driver in drivers:
        _ok(http.post(
            "/v1/partner/action-events", headers=partner,
            json={"event_id": secrets.token_hex(8), "campaign_id": campaign["campaign_id"],
                  "action": "favourite_shop", "user_id": driver},
        ))  # fmt: skip
    return len(drivers)


def wait_allocated(api: str, operator_key: str, *, timeout: float = 120.0) -> dict[str, object]:
    """Wait until the allocation run has nothing left; returns its progress."""
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=api, timeout=30) as http:
        while True:
            progress = _ok(http.get("/v1/operator/billing/progress",
                                    headers=_auth(operator_key)))  # fmt: skip
            if progress["backlog_items"] == 0 and progress["batches"]:
                return progress
            if time.monotonic() > deadline:
                raise TimeoutError(f"allocation still behind: {progress}")
            time.sleep(0.5)


def _json(answer: httpx.Response) -> Any:
    _ok(answer)
    return answer.json()


def report_lines(api: str, operator_key: str, scenario: CarScenario, *, period: str) -> list[str]:
    """Per payer, the bytes and amounts billed this month; and one statement line drilled
    down to the device reports behind it."""
    lines = [f"billing month {period}:"]
    with httpx.Client(base_url=api, timeout=60) as http:
        first_line: tuple[str, dict[str, str], Any] | None = None
        for name, (_, sponsor) in scenario.sponsors.items():
            statement = _json(http.get(f"/v1/sponsor/statements/{period}", headers=sponsor))
            for total in statement["totals"]:
                lines.append(
                    f"  {name:<22} {total['bytes'] / MB:>12,.1f} MB"
                    f"  {total['amount']:>12} {total['currency']}"
                )
            statement_lines = statement["lines"]
            if first_line is None and statement_lines:
                first_line = (name, sponsor, statement_lines[0])
        wallet = overage = overage_minor = 0
        for driver_id in scenario.drivers:
            mine = _json(
                http.get(
                    f"/v1/operator/billing/drivers/{driver_id}/statements/{period}",
                    headers=_auth(operator_key),
                )
            )
            wallet += int(mine["wallet_bytes"])
            overage += int(mine["overage_bytes"])
            overage_minor += sum(int(t["amount_minor"]) for t in mine["totals"])
        lines.append(f"  {'drivers, from wallets':<22} {wallet / MB:>12,.1f} MB")
        lines.append(
            f"  {'drivers, overage':<22} {overage / MB:>12,.1f} MB"
            f"  {overage_minor / 100:>12,.2f} CNY"
        )
        if first_line is not None:
            name, sponsor, line = first_line
            items = _json(
                http.get(
                    f"/v1/sponsor/statements/{period}/lines/{line['line_id']}/items",
                    params={"limit": 3}, headers=sponsor,
                )
            )  # fmt: skip
            lines.append(
                f"drill-down: {name}, {line['policy_name']} / {line['category']}:"
                f" {line['items']:,} items, {line['mb']} MB x {line['unit_price']}"
                f" = {line['amount']} {line['currency']}; its first device reports:"
            )
            for item in items["items"]:
                lines.append(
                    f"  iccid {item['iccid']} boot {item['boot']} seq {item['seq']}"
                    f" {item['window_start']} {item['app']}: {item['bytes']:,} bytes"
                )
    return lines


def driver_page_link(api: str, scenario: CarScenario) -> str:
    """A one-time link that signs a demo driver (one whose wallet was filled) into the
    driver page."""
    driver = next(iter(scenario.drivers.values()))
    with httpx.Client(base_url=api, timeout=30) as http:
        return str(_json(http.post("/v1/me/sign-in-links", headers=driver))["url"])
