"""What every worker's ``__main__`` does: settings, logging, signals, run until told to stop."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Awaitable, Callable

from common import logs
from common.settings import Settings, SettingsError, load


def run_worker(role: str, serve: Callable[[Settings, asyncio.Event], Awaitable[None]]) -> int:
    """Loads and logs settings, sets SIGINT/SIGTERM to stop ``serve`` gracefully, runs it.
    Exit codes: 0 after a clean stop, 2 for invalid settings (the reason on stderr)."""

    async def main() -> None:
        settings = load()
        logs.setup(settings, role)
        logs.log_config(settings, role)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve(settings, stop)

    try:
        asyncio.run(main())
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    return 0
