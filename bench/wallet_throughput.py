"""Wallet benchmark: redemptions per second and their latency, through the service layer and
through the HTTP API, against ceilings measured in the same run on the same machine.

A redemption is an exchange order of one catalogue item (1 MB, no money part, fulfilled by its
merchant): it authenticates the user, takes the data from the wallet's earliest-expiring lot
into a balanced ledger transaction under an idempotency key, and records the order and its
events. Each request goes to one of many users' wallets (one wallet serialises its own
redemptions, by design). Every request carries a fresh Idempotency-Key and is committed (with
the cluster's synchronous commit) before its answer.

Ceilings: `GET /healthz` (the HTTP stack with no database) and an authenticated
`GET /v1/wallet` (the key check and one read), at the same concurrency.

Everything runs on this one machine: the load generator (wrk), the API's worker processes and
PostgreSQL share its cores, and so does whatever else runs on it (the load average is printed
before and after). Figures vary from run to run; compare them with the ceilings of the same
run, and run it more than once.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID

import httpx
from throwaway_stack import fresh_stack, machine

from devstack import localstack
from devstack.localstack.processes import _free_port
from flowbill import db
from flowbill.settings import Settings
from flowbill.units import MB
from tenants import service as tenants
from tenants.schemas import Role
from wallet import exchange, service
from wallet.schemas import CatalogueItemCreate, ExchangeOrderRequest, ItemKind

REPO = Path(__file__).resolve().parent.parent


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
            f"{self.name:<62} {self.rate:>8,.0f}/s  p50 {self.p50_ms:>6.1f} ms"
            f"  p99 {self.p99_ms:>6.1f} ms  ({self.requests:,} done, {self.failures} failed)"
        )


async def prepare(settings: Settings, users: int) -> tuple[list[tuple[str, str]], UUID]:
    """`users` drivers with keys and 10 GB each, and a 1 MB catalogue item."""
    conn = await db.connect(settings, application_name="flowbill-bench")
    made: list[tuple[str, str]] = []
    try:
        async with conn.transaction():
            seller = await tenants.create_tenant(conn, name="bench shop", role=Role.MERCHANT,
                                                 key_label="bench")  # fmt: skip
            merchant = str(seller.tenant.tenant_id)
            await service.fund_pool(
                conn, key="bench-fund", merchant=merchant, data_bytes=2**50, price_minor=10**9,
                currency="CNY",
            )  # fmt: skip
            now = datetime.now(UTC)
            for n in range(users):
                user = await tenants.create_tenant(conn, name=f"driver {n}", role=Role.DRIVER,
                                                   key_label="bench")  # fmt: skip
                user_id = str(user.tenant.tenant_id)
                await service.grant(
                    conn, key=f"bench-grant-{n}", funder=merchant, user=user_id,
                    data_bytes=10 * 1024 * MB, expires_at=now + timedelta(days=700),
                    source="bench", now=now,
                )  # fmt: skip
                made.append((user_id, user.key.api_key))
            item = await exchange.add_item(
                conn,
                CatalogueItemCreate(
                    kind=ItemKind.MERCHANT_GOODS, name="Sticker", sku="sticker",
                    price_bytes=MB, merchant_id=seller.tenant.tenant_id,
                ),
            )  # fmt: skip
    finally:
        await conn.close()
    return made, item.item_id


async def service_layer(
    settings: Settings, users: list[tuple[str, str]], item_id: UUID, *, concurrency: int,
    seconds: float,
) -> Run:  # fmt: skip
    """Redemptions straight through the service, one transaction each, `concurrency` at once."""
    sized = settings.model_copy(
        update={"database_pool_min": concurrency, "database_pool_max": concurrency}
    )
    pool = db.create_pool(sized, name="flowbill-bench")
    await pool.open(wait=True)
    latencies: list[float] = []
    failures = 0
    deadline = time.monotonic() + seconds
    body = ExchangeOrderRequest(item_id=item_id)

    async def loop() -> None:
        nonlocal failures
        while time.monotonic() < deadline:
            user, _ = random.choice(users)
            started = time.perf_counter()
            try:
                async with pool.connection() as conn, conn.transaction():
                    await exchange.place_order(
                        conn, user=user, key=secrets.token_hex(8), body=body,
                        now=datetime.now(UTC),
                    )  # fmt: skip
            except Exception:
                failures += 1
                continue
            latencies.append(time.perf_counter() - started)

    started = time.monotonic()
    await asyncio.gather(*(loop() for _ in range(concurrency)))
    elapsed = time.monotonic() - started
    await pool.close()
    ordered = sorted(latencies)
    return Run(
        f"service layer alone, {concurrency} at once",
        len(ordered) / elapsed,
        1000 * ordered[len(ordered) // 2],
        1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))],
        len(ordered),
        failures,
    )


# wrk's request generator: a random user's key and a fresh Idempotency-Key per request.
WRK_SCRIPT = """
local keys = {}
local counter = 0
local thread_id = 0
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("thread_id", threads)
end
function init(args)
  for line in io.lines(args[1]) do keys[#keys + 1] = line end
  math.randomseed(os.time() * 1000 + thread_id)
end
function request()
  counter = counter + 1
  local headers = {}
  headers["Authorization"] = "Bearer " .. keys[math.random(#keys)]
  local unique = thread_id .. "-" .. counter .. "-" .. math.random(1000000000)
  headers["Idempotency-Key"] = "wrk-" .. unique
  headers["Content-Type"] = "application/json"
  return wrk.format(nil, nil, headers, nil)
end
"""


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} (1 min), {five:.2f} (5 min), {fifteen:.2f} (15 min)"


def _milliseconds(text: str) -> float:
    value = float(text.rstrip("usm"))
    unit = text.lstrip("0123456789.")
    return value * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk_run(
    name: str, url: str, keys_file: Path, *, method: str, body: str | None, concurrency: int,
    seconds: float, threads: int,
) -> Run:  # fmt: skip
    """Drive the API with wrk (C, so the load generator is not the bottleneck)."""
    script = keys_file.with_suffix(".lua")
    script.write_text(
        WRK_SCRIPT + f'wrk.method = "{method}"\n' + (f"wrk.body = '{body}'\n" if body else "")
    )
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{concurrency}", f"-d{int(seconds)}s", "--latency",
         "-s", str(script), url, "--", str(keys_file)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    rate = p50 = p99 = 0.0
    failures = total = 0
    for line in out.splitlines():
        parts = line.split()
        if line.strip().startswith("50%"):
            p50 = _milliseconds(parts[1])
        elif line.strip().startswith("99%"):
            p99 = _milliseconds(parts[1])
        elif line.startswith("Requests/sec:"):
            rate = float(parts[1])
        elif "requests in" in line:
            total = int(parts[0])
        elif line.strip().startswith("Non-2xx or 3xx responses:"):
            failures = int(parts[-1])
    return Run(name, rate, p50, p99, total, failures)


def start_api(
    settings: Settings, port: int, workers: int, pool: int, log: Path
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "FLOWBILL_DATABASE_URL": settings.database_dsn,
        **settings.broker_environment(),
        "FLOWBILL_ENVIRONMENT": "test",
        "FLOWBILL_LOG_LEVEL": "WARNING",
        "FLOWBILL_DATABASE_POOL_MAX": str(pool),
    }
    process = subprocess.Popen(
        [str(REPO / ".venv" / "bin" / "flowbill"), "serve", "--port", str(port),
         "--workers", str(workers)],
        env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    process.kill()
    raise SystemExit(f"bench: the API did not start; see {log}")


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=10)
    # Redemptions plateau at what the cores give (the load generator's share included); more
    # requests at once only queue longer. The target is checked at each level.
    parser.add_argument(
        "--concurrency", default="8,32", help="requests at once, one run per comma-separated level"
    )
    parser.add_argument("--workers", type=int, default=2, help="API worker processes")
    # A redemption holds its connection for one statement: a few per worker keep the cores
    # for work rather than for switching between dozens of database backends.
    parser.add_argument("--pool", type=int, default=8, help="database connections per worker")
    args = parser.parse_args()
    levels = [int(level) for level in args.concurrency.split(",")]

    state = REPO / ".state" / "bench-wallet"
    settings = fresh_stack(state)
    print(machine())
    print(
        f"workload: {args.users} wallets, {args.seconds:.0f} s per run, at"
        f" {' and '.join(map(str, levels))} requests at once, API with {args.workers} worker"
        f" processes of {args.pool} database connections each"
    )
    print(
        f"shared: wrk, the API and PostgreSQL run on the same {os.cpu_count()} cores;"
        f" load average before: {_load()}\n"
    )
    users, item_id = await prepare(settings, args.users)
    runs: list[Run] = []
    runs.append(await service_layer(settings, users, item_id, concurrency=8, seconds=args.seconds))
    print(f"  measured {runs[-1].name}", flush=True)
    port = _free_port()
    api = start_api(settings, port, args.workers, args.pool, state / "api.log")
    base = f"http://127.0.0.1:{port}"
    keys_file = state / "bench-keys.txt"
    keys_file.write_text("".join(f"{key}\n" for _, key in users))
    try:
        for level in levels:
            for name, method, path, body in (
                ("ceiling: GET /healthz (no database)", "GET", "/healthz", None),
                ("ceiling: GET /v1/wallet (key check + one read)", "GET", "/v1/wallet", None),
                ("redemptions: POST /v1/wallet/exchange-orders", "POST",
                 "/v1/wallet/exchange-orders", f'{{"item_id": "{item_id}"}}'),
            ):  # fmt: skip
                runs.append(
                    wrk_run(
                        f"{name}, {level} at once",
                        base + path,
                        keys_file,
                        method=method,
                        body=body,
                        concurrency=level,
                        seconds=args.seconds,
                        threads=1,
                    )
                )
                print(f"  measured {runs[-1].name}", flush=True)
    finally:
        api.terminate()
        api.wait(timeout=30)
    conn = await db.connect(settings, application_name="flowbill-bench")
    try:
        problems = await service.check_books(conn)
    finally:
        await conn.close()
    print()
    for run in runs:
        print(run.line())
    print()
    for n, level in enumerate(levels):
        health, read, redemptions = runs[1 + 3 * n : 4 + 3 * n]
        print(f"{level} at once: HTTP redemptions = {redemptions.rate / health.rate:.2f} x GET"
              f" /healthz, {redemptions.rate / read.rate:.2f} x GET /v1/wallet,"
              f" {redemptions.rate / runs[0].rate:.2f} x the service layer alone")  # fmt: skip
        met = redemptions.rate >= 1000 and redemptions.p99_ms < 50 and not redemptions.failures
        print(f"  target >= 1,000 redemptions/s over HTTP with p99 < 50 ms: "
              f"{'met' if met else 'NOT met'} ({redemptions.rate:,.0f}/s, p99 "
              f"{redemptions.p99_ms:.1f} ms)")  # fmt: skip
    print(f"books after the run: {'balanced' if not problems else problems[:3]}")
    print(f"load average after: {_load()} (other work on the machine skews the figures)")
    localstack.down(state)
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
