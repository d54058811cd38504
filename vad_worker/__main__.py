"""python -m vad_worker: run one VAD worker until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import sys

from common import logs
from common.settings import SettingsError, load
from vad_worker.worker import VadWorker


async def _main() -> None:
    settings = load()
    logs.setup(settings, "vad")
    logs.log_config(settings, "vad")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await VadWorker(settings).run(stop)


def main() -> int:
    try:
        asyncio.run(_main())
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
