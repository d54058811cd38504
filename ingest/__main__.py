"""python -m ingest: run one edge until SIGINT/SIGTERM (then drain: see ingest.app)."""

from __future__ import annotations

import asyncio
import logging
import sys

from aiohttp import web

from common.role import run_worker
from ingest.app import init
from ingest.edge_settings import EdgeSettings

log = logging.getLogger(__name__)


async def serve(settings: EdgeSettings, stop: asyncio.Event) -> None:
    runner = web.AppRunner(init(settings), access_log=None, shutdown_timeout=settings.drain_timeout_seconds + 10)
    await runner.setup()
    try:
        await web.TCPSite(runner, settings.host, settings.port).start()
        host, port = runner.addresses[0][:2]
        # With port 0 the OS picks a free port: this line says which (asr dev and the tests read it).
        log.info("edge listening on http://%s:%d", host, port)
        await stop.wait()
    finally:
        await runner.cleanup()  # on_shutdown drains the sessions (1012), then the bus closes


def main() -> int:
    return run_worker("ingest", EdgeSettings, serve)


if __name__ == "__main__":
    sys.exit(main())
