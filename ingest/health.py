"""A small HTTP endpoint for the ingest worker: /metrics, /healthz and /readyz."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

_MAX_REQUEST_LINE = 8192


def _response(status: str, content_type: str, body: bytes) -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


async def serve_health(*, host: str, port: int, ready: Callable[[], bool]) -> asyncio.Server:
    """Start serving; `ready()` answers /readyz (broker connected and database reachable)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), timeout=5)
            parts = line[:_MAX_REQUEST_LINE].decode("latin-1").split()
            path = parts[1].split("?", 1)[0] if len(parts) >= 2 else ""
            if path == "/metrics":
                reply = _response("200 OK", CONTENT_TYPE_LATEST, generate_latest())
            elif path == "/healthz":
                reply = _response("200 OK", "application/json", b'{"status":"ok"}')
            elif path == "/readyz":
                ok = ready()
                reply = _response(
                    "200 OK" if ok else "503 Service Unavailable",
                    "application/json",
                    b'{"status":"ready"}' if ok else b'{"status":"not ready"}',
                )
            else:
                reply = _response("404 Not Found", "text/plain", b"not found\n")
            writer.write(reply)
            await writer.drain()
        except (TimeoutError, ConnectionError, UnicodeDecodeError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    return await asyncio.start_server(handle, host, port)
