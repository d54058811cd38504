"""What every worker's ``__main__`` does: settings, logging, signals, run until told to stop."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Awaitable, Callable

from common import gc_pauses, logs
from common.settings import Settings, SettingsError, load


def runner(settings: Settings) -> asyncio.Runner:
    """An ``asyncio.Runner`` on the loop ``settings.event_loop`` names (validated by ``load``)."""
    if settings.event_loop == "uvloop":
        import uvloop

        return asyncio.Runner(loop_factory=uvloop.new_event_loop)
    return asyncio.Runner()


def run_worker(role: str, serve: Callable[[Settings, asyncio.Event], Awaitable[None]]) -> int:
    """Loads and logs settings, sets SIGINT/SIGTERM to stop ``serve`` gracefully, runs it on the
    configured event loop. Exit codes: 0 after a clean stop, 2 for invalid settings (the reason on
    stderr)."""
    try:
        settings = load()
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2

    async def main() -> None:
        logs.setup(settings, role)
        logs.log_config(settings, role)
        gc_pauses.install(settings.gc_threshold)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        logging.getLogger(role).info("event loop: %s.%s", type(loop).__module__, type(loop).__name__)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve(settings, stop)

    with runner(settings) as run:
        run.run(main())
    return 0
