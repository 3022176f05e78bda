"""IoT card benchmark: card activations and recharges per second through the HTTP API, against
baselines measured in the same run on the same machine.

- An activation (`POST /v1/iot/cards/{iccid}/activation`) authenticates the holder, locks the
  card, checks its verification, binds the IMEI, records the history and judges the card's
  usage against its plan (a read of the metered rollup). Each card activates once, so the
  bench prepares verified cards first (through the service layer) and wrk walks through them.
- A recharge (`POST /v1/iot/cards/{iccid}/recharges`, a top-up) authenticates the holder,
  records the order under its Idempotency-Key and, after the response, charges it through
  the simulated payment gateway, books the split in the ledger and issues the invoice
  through the simulated invoicing service — all in the same API processes, as in production.

Baselines: `GET /healthz` (the HTTP stack, no database) and an authenticated
`GET /v1/iot/cards` (one key lookup and one read), at the same concurrency.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID

import httpx
from throwaway_stack import fresh_stack, machine

from devstack import localstack
from devstack.localstack.processes import _free_port
from flowbill import db
from flowbill.periods import Calendar
from flowbill.settings import CALLBACK_PARTIES, Settings
from ingest.protocol import iccid_check_digit
from iot_cards import settlement
from iot_cards.schemas import (
    CardAssignment,
    MerchantPlanSet,
    PlanKind,
    PurchaseCreate,
    SellerProfile,
    VerificationRequest,
    WholesalePlanCreate,
)
from iot_cards.service import inventory, merchants, orders, verification
from tenants import service as tenants
from tenants.schemas import Role
from wallet.gateways import GatewayResult, Outcome

REPO = Path(__file__).resolve().parent.parent
SECRET = "bench-gateway-callback-secret"  # noqa: S105 (a throwaway stack)
HASH_KEY = b"bench-id-hash-key"
TAX_ID = "91350100M000100Y43"


@dataclass
class Run:
    name: str
    rate: float
    p50_ms: float
    p99_ms: float
    requests: int
    failures: int

    def line(self) -> str:
        return (
            f"{self.name:<56} {self.rate:>8,.0f}/s  p50 {self.p50_ms:>6.1f} ms"
            f"  p99 {self.p99_ms:>6.1f} ms  ({self.requests:,} done, {self.failures} failed)"
        )


def _resident_id(n: int) -> str:
    from iot_cards.idcheck import check_digit

    first17 = f"110101{1970 + n % 30}0101{n % 1000:03d}"
    return first17 + check_digit(first17)


async def prepare(settings: Settings, cards: int) -> tuple[list[tuple[str, str]], UUID]:
    """`cards` verified cards, each of its own holder: [(holder key, iccid)], top-up plan."""
    conn = await db.connect(settings, application_name="flowbill-bench")
    now = datetime.now(UTC)
    calendar = Calendar.from_settings(settings)
    made: list[tuple[str, str]] = []
    try:
        async with conn.transaction():
            operator = await tenants.create_tenant(
                conn, name="bench operator", role=Role.OPERATOR, key_label="bench"
            )
            merchant = await tenants.create_tenant(
                conn, name="bench iot shop", role=Role.MERCHANT, key_label="bench"
            )
            merchant_id = merchant.tenant.tenant_id
            await merchants.set_profile(
                conn,
                merchant_id=merchant_id,
                body=SellerProfile(seller_name="Bench IoT", tax_id=TAX_ID),
            )
            monthly = await inventory.create_plan(
                conn,
                WholesalePlanCreate(
                    name="1 GB monthly",
                    kind=PlanKind.MONTHLY,
                    data_mb=1024,
                    months=12,
                    wholesale_minor=1000,
                ),
            )
            top_up = await inventory.create_plan(
                conn,
                WholesalePlanCreate(
                    name="100 MB top-up", kind=PlanKind.TOP_UP, data_mb=100, wholesale_minor=300
                ),
            )
            for plan, retail in ((monthly, 3000), (top_up, 500)):
                await merchants.set_price(
                    conn,
                    merchant_id=merchant_id,
                    plan_id=plan.plan_id,
                    body=MerchantPlanSet(retail_minor=retail),
                )
            rows = []
            for n in range(cards):
                body = f"898699{n:013d}"
                rows.append((body + iccid_check_digit(body), f"46011{n:010d}", f"1064{n:09d}"))
            csv_text = "iccid,imsi,msisdn\n" + "".join(f"{a},{b},{c}\n" for a, b, c in rows)
            await inventory.import_cards(
                conn,
                csv_text=csv_text,
                carrier="bench",
                label="bench",
                operator_id=operator.tenant.tenant_id,
            )
            await inventory.assign_cards(
                conn,
                CardAssignment(
                    merchant_id=merchant_id, first_iccid=rows[0][0], last_iccid=rows[-1][0]
                ),
            )
        for n in range(cards):
            async with conn.transaction():
                holder = await tenants.create_tenant(
                    conn, name=f"holder {n}", role=Role.DRIVER, key_label="bench"
                )
                holder_id = holder.tenant.tenant_id
                order, _ = await orders.purchase(
                    conn,
                    buyer_id=holder_id,
                    key=f"bench-order-{n}",
                    now=now,
                    body=PurchaseCreate(merchant_id=merchant_id, plan_id=monthly.plan_id),
                )
                await settlement.settle_payment(
                    conn,
                    order_id=order.order_id,
                    now=now,
                    calendar=calendar,
                    result=GatewayResult(Outcome.CONFIRMED),
                )
                submitted, _ = await verification.submit_verification(
                    conn,
                    iccid=order.iccid,
                    holder_id=holder_id,
                    key=f"bench-verify-{n}",
                    body=VerificationRequest(
                        name="张小三", id_number=_resident_id(n), phone="13812345678"
                    ),
                    hash_key=HASH_KEY,
                    now=now,
                    calendar=calendar,
                )
                await settlement.settle_verification(
                    conn,
                    verification_id=submitted.verification_id,
                    now=now,
                    result=GatewayResult(Outcome.CONFIRMED),
                )
                made.append((holder.key.api_key, order.iccid))
    finally:
        await conn.close()
    return made, top_up.plan_id


# wrk: each request takes the next (key, iccid) line of its thread's share, with a fresh
# Idempotency-Key, so every activation is of another card.
WRK_SCRIPT = """
local lines = {}
local counter = 0
local thread_id = 0
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("thread_id", threads)
end
function init(args)
  for line in io.lines(args[1]) do lines[#lines + 1] = line end
  math.randomseed(os.time() * 1000 + thread_id)
end
function luhn(body)
  local total = 0
  for i = #body, 1, -1 do
    local d = tonumber(body:sub(i, i))
    if (#body - i) % 2 == 0 then
      d = d * 2
      if d > 9 then d = d - 9 end
    end
    total = total + d
  end
  return body .. tostring((10 - total % 10) % 10)
end
function request()
  counter = counter + 1
  local key, iccid = lines[((counter - 1) % #lines) + 1]:match("(%S+) (%S+)")
  if not sequential then
    key, iccid = lines[math.random(#lines)]:match("(%S+) (%S+)")
  end
  local headers = {}
  headers["Authorization"] = "Bearer " .. key
  headers["Idempotency-Key"] = "wrk-" .. thread_id .. "-" .. counter .. "-" .. math.random(1e9)
  headers["Content-Type"] = "application/json"
  local imei = luhn(string.format("35%012d", counter))
  local body = string.gsub(template, "{imei}", imei)
  return wrk.format(method, string.gsub(path, "{iccid}", iccid), headers, body)
end
"""


def wrk_cards(
    name: str,
    base: str,
    lines_file: Path,
    *,
    method: str,
    path: str,
    body: str | None,
    sequential: bool,
    concurrency: int,
    seconds: float,
) -> Run:
    script = lines_file.with_suffix(f".{len(list(lines_file.parent.glob('*.lua')))}.lua")
    script.write_text(
        f'method = "{method}"\npath = "{path}"\nsequential = {str(sequential).lower()}\n'
        f"template = '{body or ''}'\n" + WRK_SCRIPT
    )
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{concurrency}",
            f"-d{int(seconds)}s",
            "--latency",
            "-s",
            str(script),
            base,
            "--",
            str(lines_file),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    parsed = Run(name, 0.0, 0.0, 0.0, 0, 0)
    for line in out.splitlines():
        parts = line.split()
        stripped = line.strip()
        if stripped.startswith("50%"):
            parsed.p50_ms = _ms(parts[1])
        elif stripped.startswith("99%"):
            parsed.p99_ms = _ms(parts[1])
        elif line.startswith("Requests/sec:"):
            parsed.rate = float(parts[1])
        elif "requests in" in line:
            parsed.requests = int(parts[0])
        elif stripped.startswith("Non-2xx or 3xx responses:"):
            parsed.failures = int(parts[-1])
    return parsed


def _ms(text: str) -> float:
    value = float(text.rstrip("usm"))
    return value * {"us": 0.001, "ms": 1.0, "s": 1000.0}[text.lstrip("0123456789.")]


def _wait(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"bench: {url} exited; see {log}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    process.kill()
    raise SystemExit(f"bench: {url} did not start; see {log}")


def start(
    settings: Settings,
    state: Path,
    *,
    api_port: int,
    gateway_port: int,
    iot_port: int,
    workers: int,
) -> list[subprocess.Popen[bytes]]:
    env = {
        **os.environ,
        "FLOWBILL_DATABASE_URL": settings.database_dsn,
        **settings.broker_environment(),
        "FLOWBILL_ENVIRONMENT": "test",
        "FLOWBILL_LOG_LEVEL": "WARNING",
        "FLOWBILL_DATABASE_POOL_MAX": "20",
        "FLOWBILL_GATEWAY_URL": f"http://127.0.0.1:{gateway_port}",
        "FLOWBILL_IOT_GATEWAY_URL": f"http://127.0.0.1:{iot_port}",
        "FLOWBILL_PUBLIC_URL": f"http://127.0.0.1:{api_port}",
        **{
            f"FLOWBILL_{party.upper()}_CALLBACK_SECRET": f"{SECRET}-{party}"
            for party in CALLBACK_PARTIES
        },
        "FLOWBILL_IOT_ID_HASH_KEY": HASH_KEY.decode(),
    }
    python = str(REPO / ".venv" / "bin" / "python")
    commands = [
        (
            [python, "-m", "cli", "gateway-simulator", "--port", str(gateway_port)],
            f"http://127.0.0.1:{gateway_port}/healthz",
            "gateway.log",
        ),
        (
            [python, "-m", "simulator.iot_gateways", "--port", str(iot_port)],
            f"http://127.0.0.1:{iot_port}/healthz",
            "iot-gateway.log",
        ),
        (
            [
                python,
                "-m",
                "cli",
                "serve",
                "--port",
                str(api_port),
                "--workers",
                str(workers),
            ],
            f"http://127.0.0.1:{api_port}/readyz",
            "api.log",
        ),
    ]
    started = []
    for command, ready, log_name in commands:
        log = state / log_name
        process = subprocess.Popen(
            command, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT, cwd=REPO
        )
        started.append(process)
        _wait(ready, process, log)
    return started


async def settled_orders(settings: Settings) -> dict[str, int]:
    conn = await db.connect(settings, application_name="flowbill-bench")
    try:
        cur = await conn.execute(
            "SELECT state, count(*) FROM iot_orders WHERE kind = 'recharge' GROUP BY state"
        )
        return {str(s): int(c) for s, c in await cur.fetchall()}
    finally:
        await conn.close()


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cards", type=int, default=3000, help="verified cards to activate")
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2, help="API worker processes")
    args = parser.parse_args()

    state = REPO / ".state" / "bench-iot"
    settings = fresh_stack(state)
    print(machine())
    print(
        f"workload: {args.cards} verified cards, {args.seconds:.0f} s per run, "
        f"{args.concurrency} requests at once, API with {args.workers} worker processes\n"
    )
    prepared_at = time.monotonic()
    cards, top_up = await prepare(settings, args.cards)
    print(f"  prepared {len(cards)} cards in {time.monotonic() - prepared_at:.0f} s", flush=True)
    ports = [_free_port() for _ in range(3)]
    processes = start(
        settings,
        state,
        api_port=ports[0],
        gateway_port=ports[1],
        iot_port=ports[2],
        workers=args.workers,
    )
    base = f"http://127.0.0.1:{ports[0]}"
    lines_file = state / "bench-cards.txt"
    lines_file.write_text("".join(f"{key} {iccid}\n" for key, iccid in cards))
    runs: list[Run] = []
    try:
        for name, path in (
            ("baseline: GET /healthz (no database)", "/healthz"),
            ("baseline: GET /v1/iot/cards (key lookup + read)", "/v1/iot/cards"),
        ):
            runs.append(
                wrk_cards(
                    name,
                    base,
                    lines_file,
                    method="GET",
                    path=path,
                    body=None,
                    sequential=False,
                    concurrency=args.concurrency,
                    seconds=args.seconds,
                )
            )
            print(f"  measured {runs[-1].name}", flush=True)
        runs.append(
            wrk_cards(
                "activations: POST /v1/iot/cards/{iccid}/activation",
                base,
                lines_file,
                method="POST",
                path="/v1/iot/cards/{iccid}/activation",
                body='{"imei": "{imei}"}',
                sequential=True,
                concurrency=args.concurrency,
                seconds=args.seconds,
            )
        )
        print(f"  measured {runs[-1].name}", flush=True)
        runs.append(
            wrk_cards(
                "recharges: POST /v1/iot/cards/{iccid}/recharges",
                base,
                lines_file,
                method="POST",
                path="/v1/iot/cards/{iccid}/recharges",
                body=f'{{"plan_id": "{top_up}"}}',
                sequential=False,
                concurrency=args.concurrency,
                seconds=args.seconds,
            )
        )
        print(f"  measured {runs[-1].name}", flush=True)
        # Let the payments and invoices queued after the responses finish.
        await asyncio.sleep(3)
    finally:
        for process in reversed(processes):
            process.terminate()
            process.wait(timeout=30)
    orders = await settled_orders(settings)
    print()
    for run in runs:
        print(run.line())
    health, listing, activations, recharges = runs
    print()
    print(
        f"activations = {activations.rate / listing.rate:.2f} x GET /v1/iot/cards, "
        f"{activations.rate / health.rate:.2f} x GET /healthz"
    )
    print(
        f"recharges   = {recharges.rate / listing.rate:.2f} x GET /v1/iot/cards, "
        f"{recharges.rate / health.rate:.2f} x GET /healthz"
    )
    if activations.requests > len(cards):
        print(
            f"note: {activations.requests - len(cards)} activations re-used a card (409s): "
            "raise --cards for an exact figure"
        )
    print(f"recharge orders after the run, by state: {orders}")
    localstack.down(state)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
