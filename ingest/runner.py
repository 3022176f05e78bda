"""`flowbill ingest`: run one ingest worker until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import logging
import signal

import stamina

from flowbill.settings import Settings
from ingest.consumer import IngestWorker, log_retry
from ingest.health import serve_health

log = logging.getLogger(__name__)


async def run_worker(settings: Settings) -> None:
    """Consume until a termination signal; the batch in hand is committed and acknowledged."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    stamina.instrumentation.set_on_retry_hooks([log_retry])
    worker = IngestWorker(settings)
    server = None
    if settings.ingest_metrics_port:
        server = await serve_health(
            host=settings.api_host,
            port=settings.ingest_metrics_port,
            ready=lambda: worker.broker_connected and worker.database_ok,
        )
    log.info("ingest worker started", extra={"client_id": settings.ingest_worker_id})
    try:
        await worker.run(stop)
    finally:
        if server is not None:
            server.close()
    log.info("ingest worker stopped")
