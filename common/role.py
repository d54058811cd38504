"""What every worker's ``__main__`` does: settings, logging, signals, run until told to stop."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import TypeVar

from common import gc_pauses, logs
from common.settings import Settings, SettingsError, load
from common.settings_view import SettingsView

View = TypeVar("View", bound=SettingsView)


def runner(settings: Settings) -> asyncio.Runner:
    """An ``asyncio.Runner`` on the loop ``settings.event_loop`` names (validated by ``load``)."""
    if settings.event_loop == "uvloop":
        import uvloop

        return asyncio.Runner(loop_factory=uvloop.new_event_loop)
    return asyncio.Runner()


def run_worker(role: str, view: type[View], serve: Callable[[View, asyncio.Event], Awaitable[None]]) -> int:
    """Loads, validates and logs all settings, sets SIGINT/SIGTERM to stop ``serve`` gracefully, and
    runs it on the configured event loop with the role's ``view`` of the settings (the process-wide
    ones, logging, event loop and garbage collector, are applied here). Exit codes: 0 after a
    clean stop, 2 for invalid settings (the reason on stderr)."""
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
        await serve(view.from_settings(settings), stop)

    with runner(settings) as run:
        run.run(main())
    return 0
